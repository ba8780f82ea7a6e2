"""Rewrite mining (absorbing Markov chains over rephrase chains), its evaluation, the query-rewriter model."""
