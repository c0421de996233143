"""Human preference studies (DALL·E 2 §5): pairwise photorealism, caption-match and diversity ratings.

* `create_study(out_dir, [(system, sample_dir), ...], questions=...)` → a study directory (study.db)
* `create_app(study_dir)` → the FastAPI rating app (raters, owner results, exports)
* `compute_results(StudyStore(study_dir))` → win rates, Bradley–Terry, raters, checks, agreement
* `fleiss_kappa`, `krippendorff_alpha_nominal` → inter-rater agreement
"""
from unclip.studies.agreement import fleiss_kappa, krippendorff_alpha_nominal
from unclip.studies.design import Question, create_study, rater_order
from unclip.studies.samples import StudyError, load_sample_dir
from unclip.studies.store import DuplicateVote, StudyStore, VoteError


def create_app(study_dir, n_boot: int = 1000):
    """Import FastAPI only when serving."""
    from unclip.studies.app import create_app as _create

    return _create(study_dir, n_boot=n_boot)


def compute_results(store, n_boot: int = 1000):
    from unclip.studies.results import compute_results as _compute

    return _compute(store, n_boot=n_boot)


__all__ = [
    "DuplicateVote", "Question", "StudyError", "StudyStore", "VoteError", "compute_results", "create_app",
    "create_study", "fleiss_kappa", "krippendorff_alpha_nominal", "load_sample_dir", "rater_order",
]
