"""Style classifiers of "this author" vs "other writers" (scikit-learn, no torch).

``classifier`` is evaluation's (character and word n-grams, the style score of a model's
generations); ``judge`` is datagen's ``style_classifier`` judging method's (word 1-3-grams on its
own seeded half of the corpus). Both live here, below datagen and evaluation, so that the judge
does not import evaluation; they are never the same classifier (docs/evaluation.md).
"""
