"""Operator tools: the cluster, the demo, the queries behind the notebooks."""
