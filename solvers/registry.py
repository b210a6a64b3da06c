"""Name -> solver class registry, and the modules whose code configs and datasets may name.

Configs name classes by ``_target_`` and dataset manifests by ``solver_class``; both are
text that may come from someone else (a shared config, a downloaded dataset). Only the
project's own packages (:data:`PROJECT_PACKAGES`), modules the user trusted with
:func:`trust_module` and classes added with :func:`register` are ever imported for them:
:func:`resolve_trusted` refuses anything else before importing it.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from solvers.base import Solver

_REGISTRY: dict[str, type[Solver]] = {}

PROJECT_PACKAGES = ("solvers", "datasets", "surrogate")
_USER_MODULES: list[str] = []
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


class UntrustedCodeError(ValueError):
    """A config or a manifest names code outside the trusted modules; nothing was imported."""


def register(cls: type[Solver]) -> type[Solver]:
    """Class decorator adding a solver under its ``name``.

    A registered class is also trusted: datasets recording its ``name`` are rebuilt with
    it, and a config may name it as ``_target_`` (``module.QualName``), without trusting
    the rest of its module (see :func:`trust_module`).
    """
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"solver name {cls.name!r} is already registered by {_REGISTRY[cls.name]}")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Registered solver names, sorted."""
    return sorted(_REGISTRY)


def get_solver_class(name: str) -> type[Solver]:
    """The registered solver class ``name`` (``KeyError`` listing the available ones)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown solver {name!r}; available: {', '.join(available())}") from None


def build_solver(name: str, **kwargs: Any) -> Solver:
    """Build a registered solver from keyword arguments, naming any unknown key.

    Raises:
        KeyError: unknown solver name.
        TypeError: a keyword the solver does not take (the message lists the valid ones).
        ValueError: an invalid value (from the solver's own validation).
    """
    import inspect

    cls = get_solver_class(name)
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self"]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise TypeError(
            f"solver {name!r} got unknown key(s) {unknown}; valid keys: {', '.join(valid)}"
        )
    return cls(**kwargs)


# ---- trusted code ----------------------------------------------------------------------
def trust_module(name: str) -> None:
    """Trust a user module or package, so configs and dataset manifests may name its code.

    Configs (``_target_``) and dataset manifests (``solver_class``) are text that may come
    from someone else; this process imports only the project's packages
    (:data:`PROJECT_PACKAGES`), the modules trusted here (with their submodules) and the
    classes added by :func:`register`. Trust only code you would run yourself: naming a
    class of a trusted module in a config or a manifest runs its constructor. Call this
    before composing configs or validating datasets that use your code, e.g.::

        import solvers
        solvers.trust_module("mypkg")    # mypkg and mypkg.*: `_target_: mypkg.pdes.MyPDE`

    A solver class defined in a script (module ``__main__``) cannot be trusted this way:
    other processes cannot import it; move it into an importable module.

    Args:
        name: a dotted module or package name, e.g. ``"mypkg"`` or ``"mypkg.pdes"``.

    Raises:
        ValueError: ``name`` is not a dotted module name, or is ``__main__``.
    """
    if not isinstance(name, str) or not _MODULE_NAME.match(name):
        raise ValueError(f"trust_module: {name!r} is not a dotted module name like 'mypkg.pdes'")
    if name.split(".")[0] in ("__main__", "__mp_main__"):
        raise ValueError(
            "trust_module: a script's __main__ module cannot be imported by other processes; "
            "move the code into a module and trust that"
        )
    if name not in _USER_MODULES:
        _USER_MODULES.append(name)


def trusted_modules() -> tuple[str, ...]:
    """The project's packages, then the user modules trusted with :func:`trust_module`."""
    return PROJECT_PACKAGES + tuple(_USER_MODULES)


def is_trusted_module(module: str) -> bool:
    """Whether ``module`` is a trusted module or package, or inside one."""
    return any(module == t or module.startswith(t + ".") for t in trusted_modules())


def is_project_module(module: str) -> bool:
    """Whether ``module`` belongs to one of this project's packages."""
    return any(module == t or module.startswith(t + ".") for t in PROJECT_PACKAGES)


def resolve_trusted(path: str, *, where: str) -> Any:
    """The class or function ``path`` names, imported only if it is trusted code.

    Trusted: a class added by :func:`register` (by its exact ``module.QualName``), or a
    public class or function defined in a module of :func:`trusted_modules`. The module
    part is checked before anything is imported, and the object found after: a trusted
    module's imports (``datasets.generation.os.system``) are refused.

    Args:
        path: ``"pkg.module.Name"`` (a config's ``_target_``) or ``"pkg.module:Qual.Name"``
            (a manifest's ``solver_class``).
        where: what holds ``path``, for messages, e.g. ``"solver._target_"`` or
            ``"/data/x/manifest.json: key 'solver_class'"``.

    Raises:
        UntrustedCodeError: ``path`` is outside the trusted code (nothing was imported
            unless its module is trusted), names a private name, a module or another
            object than a class or a function.
        ValueError: a trusted ``path`` that cannot be imported.
    """
    shown = f"{where} = {path!r}"
    if not isinstance(path, str) or not _MODULE_NAME.match(path.replace(":", ".", 1)):
        raise UntrustedCodeError(f"{shown} is not a name like 'package.module.Class'")
    for cls in _REGISTRY.values():
        if path in (f"{cls.__module__}.{cls.__qualname__}", f"{cls.__module__}:{cls.__qualname__}"):
            return cls
    hint = (
        f"trusted modules: {', '.join(trusted_modules())}. If you trust this code, call "
        "solvers.trust_module('<its package>') (or solvers.register(<the class>)) first"
    )
    dotted = path.replace(":", ".", 1)
    roots = [t for t in trusted_modules() if dotted == t or dotted.startswith(t + ".")]
    if not roots:
        raise UntrustedCodeError(
            f"{shown} is outside the trusted modules, so it was not imported ({hint})"
        )
    if any(part.startswith("_") for part in dotted.split(".")):
        raise UntrustedCodeError(f"{shown} names a private name; name a public class or function")
    module, colon, qualname = path.partition(":")
    if colon and not is_trusted_module(module):
        raise UntrustedCodeError(
            f"{shown}: module {module!r} is outside the trusted modules, so it was not "
            f"imported ({hint})"
        )
    root = module if colon else max(roots, key=len)
    rest = qualname.split(".") if colon else dotted[len(root) + 1 :].split(".")
    try:
        obj: Any = importlib.import_module(root)
        for part in filter(None, rest):
            if hasattr(obj, part):
                obj = getattr(obj, part)
            elif inspect.ismodule(obj) and not colon:
                obj = importlib.import_module(f"{obj.__name__}.{part}")
            else:
                raise AttributeError(f"{getattr(obj, '__name__', obj)!r} has no attribute {part!r}")
            if inspect.ismodule(obj) and not is_trusted_module(obj.__name__):
                raise UntrustedCodeError(
                    f"{shown} reaches module {obj.__name__!r}, which is not trusted ({hint})"
                )
    except UntrustedCodeError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the trusted import raises, named
        raise ValueError(f"{shown} cannot be imported: {type(e).__name__}: {e}") from None
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        raise UntrustedCodeError(f"{shown} is a {type(obj).__name__}, not a class or a function")
    defined_in = getattr(obj, "__module__", None) or "?"
    if not is_trusted_module(defined_in):
        raise UntrustedCodeError(
            f"{shown} is {defined_in}.{obj.__qualname__}, defined outside the trusted modules "
            f"({hint})"
        )
    return obj
