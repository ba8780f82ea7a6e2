"""Silver: sessions, turns, barge-ins and rephrases (the heuristic detector and the scorer interface)."""
