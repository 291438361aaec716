"""Admission as pure functions: defaulting and validation of every KubeStash kind."""

from __future__ import annotations

from kubestash.api.admission.admit import Review, admit, review
from kubestash.api.admission.errors import AdmissionError, FieldError
from kubestash.api.admission.lookup import Lookup, StaticLookup

__all__ = ["AdmissionError", "FieldError", "Lookup", "Review", "StaticLookup", "admit", "review"]
