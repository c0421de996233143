"""Evals for unCLIP on `shapes`: the caption-match oracle, judges, scoring and the HTML report.

The metric math itself (FD, precision/recall, realism, CLIP score, Wilson, Bradley–Terry) lives in
`unclip.metrics`; the jobs that read generated-image directories are `unclip.evals.jobs`.
"""
from unclip.evals.oracle import DetectedObject, PromptSpec, match, parse_caption, read_image, spec_from_scene
from unclip.evals.report import Report

__all__ = ["DetectedObject", "PromptSpec", "Report", "match", "parse_caption", "read_image", "spec_from_scene"]
