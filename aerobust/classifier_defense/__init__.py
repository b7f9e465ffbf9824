"""Autoencoders as a defense for classifiers (``aerobust defend``): purification, detection, OOD, calibration.

``run_defend`` runs the analyses; :func:`aerobust.report.defend.write_defend_report` writes their tables,
figures and manifest.
Each analysis is also usable alone (see the submodules).
"""
from .attacks import CLASSIFIER_ATTACKS, AttackOptions, ClassifierAttackPreset, attack_classifier, get_attack
from .calibration import calibration_data, calibration_summary
from .detect import DETECTION_SCORES, consistency_scores, detection_table, entropy, roc_auc
from .ood import OOD_SCORES, PRIORS, ood_scores, ood_sets, ood_table, reconstruction_error, resolve_prior
from .purify import AdversarialSet, generate_adversarials, purification_table, purifier
from .setup import DefendInputs, prepare_classifier, prepare_defend
from .suite import ANALYSES, DefendConfig, DefendResults, adversarial_cache_key, config_record, run_defend

__all__ = [
    "ANALYSES", "CLASSIFIER_ATTACKS", "DETECTION_SCORES", "OOD_SCORES", "PRIORS", "AdversarialSet", "AttackOptions",
    "ClassifierAttackPreset", "DefendConfig", "DefendInputs", "DefendResults", "adversarial_cache_key",
    "attack_classifier", "calibration_data", "calibration_summary", "config_record", "consistency_scores",
    "detection_table", "entropy", "generate_adversarials", "get_attack", "ood_scores", "ood_sets",
    "ood_table", "prepare_classifier", "prepare_defend", "purification_table", "purifier", "reconstruction_error",
    "resolve_prior", "roc_auc", "run_defend",
]
