"""Worker answers from every source as one model, IoU voting, and the simulated crowd.

Pure: no I/O, no AWS.
"""

from orchestrator.consolidation.answers import (
    MAX_BOXES_PER_ANSWER,
    MAX_COORDINATE,
    MAX_XML_CHARS,
    AnswerReport,
    Box,
    ObjectAnswers,
    WorkerAnswer,
    box_iou,
    parse_consolidation_payload,
    parse_element_answer,
    parse_mturk_answer,
    parse_worker_response,
)
from orchestrator.consolidation.gold import GoldScore, gold_weight, score_gold
from orchestrator.consolidation.iou_vote import (
    ConsolidatedBox,
    IoUVote,
    ObjectResult,
    WorkerQuality,
    consolidate_image,
)
from orchestrator.consolidation.simulated_crowd import CrowdSimulator, TruthImage, synthetic_dataset

__all__ = [
    "AnswerReport",
    "Box",
    "ConsolidatedBox",
    "GoldScore",
    "CrowdSimulator",
    "IoUVote",
    "MAX_BOXES_PER_ANSWER",
    "MAX_COORDINATE",
    "MAX_XML_CHARS",
    "ObjectAnswers",
    "ObjectResult",
    "TruthImage",
    "WorkerAnswer",
    "WorkerQuality",
    "box_iou",
    "consolidate_image",
    "gold_weight",
    "parse_consolidation_payload",
    "parse_element_answer",
    "parse_mturk_answer",
    "parse_worker_response",
    "score_gold",
    "synthetic_dataset",
]
