"""Failure point isolation, learned: which component a defective request failed at first.

``inputs`` gathers what a defective turn, its context and its user's fix say (Spark);
``model`` turns that into features (MiniLM sentence embeddings and metadata) and classifies them
with gradient boosting; ``spark`` runs the registered ``failure-point-classifier`` in the silver
batch; ``train`` is ``feedback train-failure-points``. The rules baseline lives in
``feedback.silver.failure_points`` and answers wherever no model is registered.
"""
