"""Baselines a learned model must beat: the calcium rule (bright leading edge + acoustic shadow behind)."""

from ivus_tf.baselines.fit import fit_rule, score_rule
from ivus_tf.baselines.rule import RuleParams, predict_calcium

__all__ = ["RuleParams", "fit_rule", "predict_calcium", "score_rule"]
