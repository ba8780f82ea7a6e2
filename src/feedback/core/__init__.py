"""What every stage shares: the Spark session, the lake's paths and schemas, Delta helpers, the MLflow registry."""
