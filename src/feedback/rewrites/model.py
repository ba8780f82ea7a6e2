"""Model-from-code entry of ``query-rewriter``: MLflow stores this file with the model and runs it at load time.

Why a file rather than a pickled object: the logged model then holds readable code and its
data (the rewrite table artifact), nothing deserialised blindly; the class itself lives in
``feedback.rewrites.pyfunc`` (mlflow and pandas only), so the model needs the ``feedback`` package
where it is loaded, but not Spark.
"""

from __future__ import annotations

import mlflow

from feedback.rewrites.pyfunc import QueryRewriter

mlflow.models.set_model(QueryRewriter())
