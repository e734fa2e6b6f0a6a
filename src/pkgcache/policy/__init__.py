"""The supply-chain policy: which PyPI files and conda packages pkgcache serves.

One vocabulary for both sides: a minimum release age (with exemptions and a choice for unknown ages), deny rules,
allow rules with an allow-only mode, and instant blocks added at run time. `PypiPolicy` and `CondaPolicy` compile a
side's settings (`PypiPolicySettings`, `CondaPolicySettings`, mounted in `[pypi]` and `[conda]`) once; their
`fingerprint` changes whenever the rules or blocks do. docs/policy.md is the user's guide.

`pkgcache.policy.conda` imports py-rattler; import it only where conda is served.
"""

from pkgcache.policy.common import ALLOWED, Block, RuleRef, Verdict, parse_block_target, parse_duration
from pkgcache.policy.config import CondaPolicySettings, PypiPolicySettings
from pkgcache.policy.engine import Pin, PinFile, PinVerdict
from pkgcache.policy.pypi import PageFilter, PypiPolicy

__all__ = [
    "ALLOWED",
    "Block",
    "CondaPolicySettings",
    "PageFilter",
    "Pin",
    "PinFile",
    "PinVerdict",
    "PypiPolicy",
    "PypiPolicySettings",
    "RuleRef",
    "Verdict",
    "parse_block_target",
    "parse_duration",
]
