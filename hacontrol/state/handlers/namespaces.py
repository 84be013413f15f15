"""ns_put: create a namespace or change its quota."""

from __future__ import annotations

from typing import Any

from hacontrol.model.errors import Rejection

from .. import views
from ..context import Applying, Result
from ..quota import check_fits
from ..validate import check_name, parse_quota


def put(tx: Applying, args: dict[str, Any]) -> Result:
    name = check_name(args.get("name"), "namespace")
    quota = parse_quota(args.get("quota"))
    rej = check_fits(quota, tx.store.namespace_usage(name))
    if rej is not None:
        raise Rejection(rej.code, "the namespace already uses more than this quota: "
                        + rej.message, "quota." + (rej.field or "").split(".")[-1])
    tx.store.namespaces[name] = quota
    return {"namespace": views.namespace_view(tx.store, name)}
