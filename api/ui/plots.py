"""Inline SVG plots of a judge's calibration: no plotting library in the API process."""

from __future__ import annotations

from markupsafe import Markup, escape

from chatpgt.review.schemas import JudgeCalibration

W, H = 520, 260
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 14, 36


def _x(bucket: float) -> float:
    return LEFT + (bucket - 0.5) * (W - LEFT - RIGHT) / 10


def _y(rate: float) -> float:
    return TOP + (1 - rate) * (H - TOP - BOTTOM)


def agreement_svg(judge: JudgeCalibration, target: float) -> Markup:
    """Agreement with the reviewers per confidence bucket (dots, 95% Wilson bars, the label
    count above), agreement at min_confidence ≥ t (line) and the target (dashed)."""
    parts = [
        f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="agreement of '
        f'{escape(judge.model)} with reviewers per confidence bucket">',
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
        'fill="#fafafa" stroke="#ccc"/>',
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        y = _y(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
            f"{tick:.2f}</text>"
        )
    for bucket in range(1, 11):
        parts.append(
            f'<text x="{_x(bucket):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" '
            f'font-size="11">{bucket}</text>'
        )
    parts.append(
        f'<text x="{(LEFT + W - RIGHT) / 2:.1f}" y="{H - 4}" text-anchor="middle" '
        'font-size="11">judge confidence (bucket)</text>'
    )
    ty = _y(target)
    parts.append(
        f'<line class="target" x1="{LEFT}" x2="{W - RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}" '
        'stroke="#c0392b" stroke-dasharray="5,4"/>'
    )
    points = [
        f"{_x(t.min_confidence):.1f},{_y(t.agreement.rate):.1f}"
        for t in judge.thresholds
        if t.agreement.rate is not None
    ]
    if len(points) > 1:
        parts.append(
            f'<polyline class="cumulative" points="{" ".join(points)}" fill="none" '
            'stroke="#2e86c1" stroke-width="1.5"/>'
        )
    for b in judge.buckets:
        a = b.agreement
        if a.rate is None or a.low is None or a.high is None:
            continue
        x = _x(b.bucket)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_y(a.low):.1f}" y2="{_y(a.high):.1f}" '
            'stroke="#555"/>'
        )
        parts.append(
            f'<circle class="bucket" cx="{x:.1f}" cy="{_y(a.rate):.1f}" r="4" fill="#222">'
            f"<title>bucket {b.bucket}: {a.hits}/{a.n} agree</title></circle>"
        )
        parts.append(
            f'<text x="{x:.1f}" y="{TOP + 11}" text-anchor="middle" font-size="10" '
            f'fill="#777">n={a.n}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
