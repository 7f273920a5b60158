"""The evaluation vocabulary every layer shares: the protocols a result can be measured
under and the metric names of each task. Plain tuples, no imports: the config, the
evaluators, tracking and the leaderboard all read them from here.

Every result is keyed by its protocol (Krichene & Rendle, KDD'20: sampled metrics can
reorder models), so the protocol is part of each leaderboard heading.
"""

# full: every item ranked, the user's seen items masked; sampled-*: the target among 100
# negatives drawn once (uniformly / by popularity, as in the BERT4Rec paper) and cached
SEQUENCE_PROTOCOLS = ("full", "sampled-uni100", "sampled-pop100")
PROTOCOLS = SEQUENCE_PROTOCOLS + ("impressions",)   # impressions: MIND's own candidates per impression
SEQUENCE_METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")
IMPRESSION_METRICS = ("AUC", "MRR", "nDCG@5", "nDCG@10")
