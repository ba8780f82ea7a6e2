"""The BERT span-prediction rephrase detector: encoding, spans, the Spark stage, training, the pyfunc."""
