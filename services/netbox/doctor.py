"""`edge doctor` for the NetBox sync: does NetBox answer at [netbox] url, with a tested API
version, and does it accept the token? One version probe and one read, nothing written.

Not responsible for: syncing (`edge netbox sync --dry-run` shows what a sync would change).
"""

from __future__ import annotations

from edge.doctor import FAIL, OK, SKIP, Check, guarded
from services.netbox import client


def _reachable(cfg) -> Check:
    if not cfg.enabled:
        return Check("netbox", "netbox", SKIP, "off ([netbox] enabled = false)")
    api = client.make_api(cfg, cfg.secret("token") or "")
    try:
        version = client.check_version(api)
        sites = list(api.dcim.sites.filter(slug=cfg.site))
    except Exception as exc:  # noqa: BLE001 - what NetBox's answer means, or a bug re-raised
        failure = client.classify(exc)
        if failure is None:
            raise
        return Check("netbox", "netbox", FAIL, f"{cfg.url}: {failure.message}",
                     "check [netbox] url and token_file, and that NetBox runs")
    finally:
        api.http_session.close()
    site = f"site {cfg.site} exists" if sites else f"site {cfg.site} does not exist yet"
    return Check("netbox", "netbox", OK, f"NetBox API {version} at {cfg.url} accepts the token; {site}")


def checks(config) -> list[Check]:
    return [guarded("netbox", "netbox", lambda: _reachable(config["netbox"]))]
