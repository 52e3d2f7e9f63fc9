"""itsmctl's command groups, one module each; a new group is one module here and one line in GROUPS.

Each module has SECTION and SUMMARY (for the grouped `itsmctl --help`) and register(sub), which
adds its parser, its actions and their own options.
"""

from __future__ import annotations

from ops.commands import (
    acls,
    changes,
    cmdb,
    completion,
    demo,
    deploy,
    devitsm,
    dlq,
    fieldkeys,
    freeze,
    gate,
    gateway,
    incidents,
    integrations,
    itsm,
    kafka,
    lag,
    poll,
    retention,
    rules,
    silence,
    sink,
    status,
    tokens,
    topics,
    worker,
)

# In the order `itsmctl --help` lists them.
GROUPS = (
    kafka,
    topics,
    worker,
    gateway,
    poll,
    itsm,
    sink,
    devitsm,
    lag,
    status,
    dlq,
    gate,
    changes,
    cmdb,
    freeze,
    deploy,
    incidents,
    silence,
    rules,
    tokens,
    acls,
    fieldkeys,
    integrations,
    retention,
    demo,
)
EXTRA = (completion,)
