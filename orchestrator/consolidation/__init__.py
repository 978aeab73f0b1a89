"""Worker answers from every source as one model, IoU voting, and the simulated crowd.

Pure: no I/O, no AWS. Names are imported from their module on first use (`orchestrator.lazy_exports`).
"""

from orchestrator import lazy_exports

_EXPORTS = {
    "answers": [
        "MAX_BOXES_PER_ANSWER",
        "MAX_XML_CHARS",
        "AnswerColumns",
        "AnswerReport",
        "Box",
        "ObjectAnswers",
        "WorkerAnswer",
        "labels_in_answers",
        "parse_consolidation_columns",
        "parse_consolidation_payload",
        "parse_element_answer",
        "parse_mturk_answer",
        "parse_worker_response",
        "parse_worker_responses",
        "MAX_COORDINATE",
    ],
    "gold": ["GoldScore", "gold_weight", "score_gold", "too_low"],
    "iou": ["box_iou"],
    "iou_vote": [
        "ConsolidatedBox",
        "IoUVote",
        "ObjectResult",
        "WorkerQuality",
        "consolidate_image",
        "consolidate_objects",
    ],
    "simulated_crowd": ["CrowdSimulator", "TruthImage", "synthetic_dataset"],
    "stopping": ["EXPECTED_EXTRA_SHARE", "StopDecision", "StoppingRule", "expected_answers"],
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
