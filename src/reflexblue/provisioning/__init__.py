"""Provisioning files: read and validate them, then apply them to the database in one transaction."""

from reflexblue.provisioning.apply import ApplySummary, apply_in_session, apply_spec, provision_file
from reflexblue.provisioning.reader import ProvisioningError, ProvisioningSpec, parse_spec, read_file

__all__ = [
    "ApplySummary",
    "ProvisioningError",
    "ProvisioningSpec",
    "apply_in_session",
    "apply_spec",
    "parse_spec",
    "provision_file",
    "read_file",
]
