"""Exceptions a user can cause. Each carries a one-line message; the CLI prints it without a traceback."""

from __future__ import annotations


class ArkError(Exception):
    """Base class for errors Ark reports to users as one line."""


class ConfigError(ArkError):
    """A configuration file or value is invalid (names the file, key and what was expected)."""


class SchemaError(ArkError):
    """A message does not match its schema (unknown schema, wrong dtype/shape/type, wrong version)."""


class DecodeError(SchemaError):
    """A frame received from the network could not be decoded; it is dropped and counted."""


class RegistryError(ArkError):
    """The registry refused a request (schema conflict, unknown node, …)."""


class RegistryUnreachable(RegistryError):
    """No registry answered at the configured address."""


class ServiceError(ArkError):
    """A service call failed on the server side."""


class ServiceTimeout(ServiceError):
    """A service call got no reply within its timeout."""


class NotFound(ArkError):
    """A topic, service or node named by the user does not exist in the graph."""
