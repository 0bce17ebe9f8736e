"""Secrets kept out of MLflow: the values of environment variables named like credentials, and
the password of a URL (postgresql://user:password@host/db).

A param or tag built from user input (a data_dir, a URI with a token in it) can carry one, and
whatever MLflow records is readable by everyone with access to the store. scrub() masks them
before they are logged. The environment is read at each call, so a secret set later counts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "***"
SECRET_NAME = re.compile("TOKEN|SECRET|PASSWORD|KEY", re.IGNORECASE)
MIN_LENGTH = 4  # shorter values ("1", "on", "yes") are too common to mask
# Flags such as SOME_KEY=true are settings, not secrets; masking them would mangle tags such as
# git_dirty=false.
NOT_SECRETS = {"true", "false"}
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@", re.IGNORECASE)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of variables in `environ` (default: os.environ) whose names contain TOKEN,
    SECRET, PASSWORD or KEY, longest first."""
    environ = os.environ if environ is None else environ
    values = {
        value
        for name, value in environ.items()
        if SECRET_NAME.search(name)
        and len(value) >= MIN_LENGTH
        and value.lower() not in NOT_SECRETS
    }
    return sorted(values, key=len, reverse=True)


def scrub(mapping: Mapping, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`mapping` with its values as strings, every secret inside them replaced by ***."""
    secrets = secret_values(environ)
    values = {key: mask_url_passwords(str(value)) for key, value in mapping.items()}
    if not secrets:
        return values
    # One pass, longest first, so a secret that contains another is masked whole.
    pattern = re.compile("|".join(map(re.escape, secrets)))
    return {key: pattern.sub(MASK, value) for key, value in values.items()}


def mask_url_passwords(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return URL_PASSWORD.sub(rf"\1{MASK}@", text)
