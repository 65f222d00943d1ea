"""Exceptions raised by the executor.

Every message is safe to show to an operator: no phone number, no secret, no SQL text.

    ExecutorError
    ├── ConfigError                 a setting is invalid; the message names the variable
    ├── DatabaseError
    │   ├── DatabaseUnavailable     the database cannot be reached
    │   └── SchemaNotReady          migrations have not been applied (`executor db upgrade`)
    ├── RunLockBusy                 another run holds the run lock
    ├── StateConflict               the action is not in a state that allows the change
    ├── InputError                  bad input from a client, file or upstream
    │   ├── NotFound                the named action does not exist
    │   ├── PhoneError              a phone number is missing or not a Colombian mobile
    │   └── TemplateError
    │       ├── UnknownTemplate         the trigger names no known template
    │       └── TemplateVariablesError  a template variable is missing or empty
    └── ProviderError               Chatea misbehaved in a way the client could not classify
"""

from __future__ import annotations


class ExecutorError(Exception):
    """Base class; ``code`` is a stable machine-readable name."""

    code = "executor_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ExecutorError):
    code = "config_invalid"


class DatabaseError(ExecutorError):
    code = "database_error"


class DatabaseUnavailable(DatabaseError):
    code = "database_unavailable"


class SchemaNotReady(DatabaseError):
    code = "schema_not_ready"


class RunLockBusy(ExecutorError):
    code = "conflict"


class StateConflict(ExecutorError):
    code = "conflict"


class InputError(ExecutorError):
    code = "invalid_input"


class NotFound(InputError):
    code = "not_found"


class PhoneError(InputError):
    code = "INVALID_PHONE"


class TemplateError(InputError):
    code = "TEMPLATE_VARIABLES"


class UnknownTemplate(TemplateError):
    code = "UNKNOWN_TEMPLATE"


class TemplateVariablesError(TemplateError):
    code = "TEMPLATE_VARIABLES"


class ProviderError(ExecutorError):
    code = "provider_error"
