"""Worker answers from every source as one model, IoU voting, and the simulated crowd.

Pure: no I/O, no AWS.
"""

from orchestrator.consolidation.answers import (
    MAX_BOXES_PER_ANSWER,
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
from orchestrator.consolidation.iou_vote import (
    ConsolidatedBox,
    IoUVote,
    ObjectResult,
    WorkerQuality,
    consolidate_image,
    consolidate_objects,
)
from orchestrator.consolidation.simulated_crowd import CrowdSimulator, TruthImage, synthetic_dataset
from orchestrator.consolidation.stopping import (
    EXPECTED_EXTRA_SHARE,
    StopDecision,
    StoppingRule,
    expected_answers,
)

__all__ = [
    "AnswerReport",
    "EXPECTED_EXTRA_SHARE",
    "Box",
    "ConsolidatedBox",
    "CrowdSimulator",
    "IoUVote",
    "MAX_BOXES_PER_ANSWER",
    "MAX_XML_CHARS",
    "ObjectAnswers",
    "ObjectResult",
    "StopDecision",
    "StoppingRule",
    "TruthImage",
    "WorkerAnswer",
    "WorkerQuality",
    "box_iou",
    "consolidate_image",
    "consolidate_objects",
    "expected_answers",
    "parse_consolidation_payload",
    "parse_element_answer",
    "parse_mturk_answer",
    "parse_worker_response",
    "synthetic_dataset",
]
