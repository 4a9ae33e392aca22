"""Imports every ORM model so that ``Base.metadata`` is complete (Alembic, tests); it stands
above the domains whose models it gathers."""

from chatpgt.auth.models import ApiKey
from chatpgt.datagen.models import (
    BatchResult,
    CachedResponse,
    DatagenJob,
    Generation,
    JobTopic,
    Judgment,
    ProviderBatch,
)
from chatpgt.datasets.models import DedupScan
from chatpgt.db.base import Base
from chatpgt.evaluation.models import EvalRun
from chatpgt.pairs.labels import PairLabel
from chatpgt.pairs.models import JobWorkSummary, NearDuplicate, Pair
from chatpgt.review.models import ArenaBattle
from chatpgt.rounds.models import Round, RoundsRun
from chatpgt.serving.models import ModelGeneration
from chatpgt.topics.models import Topic
from chatpgt.training.models import RegisteredModel, TrainingRun

__all__ = [
    "ApiKey",
    "ArenaBattle",
    "Base",
    "BatchResult",
    "CachedResponse",
    "DatagenJob",
    "DedupScan",
    "EvalRun",
    "Generation",
    "JobTopic",
    "JobWorkSummary",
    "Judgment",
    "ModelGeneration",
    "NearDuplicate",
    "Pair",
    "PairLabel",
    "ProviderBatch",
    "RegisteredModel",
    "Round",
    "RoundsRun",
    "Topic",
    "TrainingRun",
]
