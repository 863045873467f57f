"""fashion-ensemble: an ANN + depthwise-separable CNN soft-voting ensemble for Fashion-MNIST.

    import fashion_ensemble as fe
    run = fe.run_study(fe.profile("default"))          # train, score, report → runs/<name>/
    model = fe.load(run)                                # rebuild from the folder alone
    proba = model.predict_proba(images)                 # (N, 28, 28) uint8 or [0, 1] float → (N, 10)
"""

from .config import PROFILES, RunConfig, profile
from .data import CLASSES, load_raw, make_split
from .ensemble import Member, SoftVotingEnsemble
from .errors import UserError
from .pipeline import evaluate, resume_study, run_study
from .runs import load
from .seeds import run_seeds, summarize

__all__ = [
    "CLASSES", "PROFILES", "Member", "RunConfig", "SoftVotingEnsemble", "UserError",
    "evaluate", "load", "load_raw", "make_split", "profile", "resume_study", "run_seeds", "run_study", "summarize",
]
__version__ = "0.1.0"
