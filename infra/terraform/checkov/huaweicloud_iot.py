"""Our checkov checks for Huawei Cloud resources (checkov ships none for the huaweicloud provider).

Run: ``python scripts/checkov.py`` (or ``checkov -d infra/terraform --external-checks-dir
infra/terraform/checkov``). Values checkov could not resolve (references, for_each items) are
treated conservatively: a check fails only on what is certainly wrong, except where noted.
"""

from __future__ import annotations

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

ANYWHERE = {"0.0.0.0/0", "::/0", "0.0.0.0/00", "*"}
# Ports that must never be open to the internet: PostgreSQL, MySQL, Redis, Kafka (plain, SASL, ...), SSH, RDP.
PRIVATE_PORTS = {5432, 3306, 6379, 9092, 9093, 9094, 9095, 22, 3389}


def _value(conf: dict, key: str, default=None):
    """checkov wraps each attribute value in a list; unwrap it."""
    value = conf.get(key, default)
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def _is_set(value) -> bool:
    return value not in (None, "", [], {}, [None], [[]])


def _truthy(value) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _as_int(value):
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


class _Check(BaseResourceCheck):
    ID = ""
    NAME = ""
    RESOURCES: tuple[str, ...] = ()
    CATEGORY = CheckCategories.NETWORKING

    def __init__(self) -> None:
        super().__init__(
            name=self.NAME, id=self.ID, categories=[self.CATEGORY], supported_resources=list(self.RESOURCES)
        )


class RdsNotPublic(_Check):
    ID = "CKV_HWC_IOT_1"
    NAME = "RDS instance has no public IP and sits behind a security group"
    RESOURCES = ("huaweicloud_rds_instance",)

    def scan_resource_conf(self, conf):
        for key in ("public_ips", "eip_id", "public_ip"):
            if _is_set(conf.get(key)):
                return CheckResult.FAILED
        return CheckResult.PASSED if _is_set(conf.get("security_group_id")) else CheckResult.FAILED


class DcsNotPublic(_Check):
    ID = "CKV_HWC_IOT_2"
    NAME = "DCS Redis has an IP whitelist that admits no internet address, and no public access"
    RESOURCES = ("huaweicloud_dcs_instance",)

    def scan_resource_conf(self, conf):
        if _truthy(_value(conf, "enable_publicip")) or _is_set(conf.get("publicip_id")):
            return CheckResult.FAILED
        if str(_value(conf, "whitelist_enable", True)).lower() == "false":
            return CheckResult.FAILED
        whitelists = conf.get("whitelists") or []
        if not whitelists:
            return CheckResult.FAILED
        for group in whitelists:
            addresses = _value(group, "ip_address") or []
            if isinstance(addresses, str):
                addresses = [addresses]
            if any(str(a).strip() in ANYWHERE for a in addresses):
                return CheckResult.FAILED
        return CheckResult.PASSED


class KafkaNotPublic(_Check):
    ID = "CKV_HWC_IOT_3"
    NAME = "DMS Kafka instance has no public IPs or public listeners"
    RESOURCES = ("huaweicloud_dms_kafka_instance",)

    def scan_resource_conf(self, conf):
        if _is_set(conf.get("public_ip_ids")) or _truthy(_value(conf, "enable_publicip")):
            return CheckResult.FAILED
        for protocol in conf.get("port_protocol") or []:
            if any(_truthy(_value(protocol, key)) for key in protocol if str(key).startswith("public_")):
                return CheckResult.FAILED
        return CheckResult.PASSED if _is_set(conf.get("security_group_id")) else CheckResult.FAILED


class NoPrivatePortFromInternet(_Check):
    ID = "CKV_HWC_IOT_4"
    NAME = "No security group rule opens a database, cache, broker or admin port to the internet"
    RESOURCES = ("huaweicloud_networking_secgroup_rule",)

    def scan_resource_conf(self, conf):
        if str(_value(conf, "direction", "")).lower() != "ingress":
            return CheckResult.PASSED
        remote = _value(conf, "remote_ip_prefix")
        group = _value(conf, "remote_group_id")
        from_anywhere = (not _is_set(remote) and not _is_set(group)) or str(remote).strip() in ANYWHERE
        if not from_anywhere:
            return CheckResult.PASSED
        if str(_value(conf, "action", "allow")).lower() == "deny":
            return CheckResult.PASSED
        low, high = _as_int(_value(conf, "port_range_min")), _as_int(_value(conf, "port_range_max"))
        ports = _value(conf, "ports")
        if _is_set(ports):
            wanted = set()
            for part in str(ports).split(","):
                start, _, end = part.strip().partition("-")
                first, last = _as_int(start), _as_int(end or start)
                if first is None or last is None:
                    return CheckResult.FAILED  # unresolved ports open to everyone: refuse
                wanted.update(range(first, last + 1))
            return CheckResult.FAILED if wanted & PRIVATE_PORTS else CheckResult.PASSED
        if low is None and high is None:
            return CheckResult.FAILED  # every port (or ports checkov cannot resolve) from anywhere
        low = low if low is not None else high
        high = high if high is not None else low
        return CheckResult.FAILED if any(low <= p <= high for p in PRIVATE_PORTS) else CheckResult.PASSED


class ObsNotPublicWrite(_Check):
    ID = "CKV_HWC_IOT_5"
    NAME = "OBS buckets and objects are never writable by the public"
    RESOURCES = ("huaweicloud_obs_bucket", "huaweicloud_obs_bucket_object")
    CATEGORY = CheckCategories.GENERAL_SECURITY

    def scan_resource_conf(self, conf):
        acl = str(_value(conf, "acl", "private")).lower()
        return (
            CheckResult.FAILED
            if acl in {"public-read-write", "public-read-write-delivered"}
            else CheckResult.PASSED
        )


class FunctionInVpc(_Check):
    ID = "CKV_HWC_IOT_6"
    NAME = "FunctionGraph functions run in the VPC (vpc_id, network_id and an agency)"
    RESOURCES = ("huaweicloud_fgs_function",)

    def scan_resource_conf(self, conf):
        needed = ("vpc_id", "network_id", "agency")
        return CheckResult.PASSED if all(_is_set(conf.get(key)) for key in needed) else CheckResult.FAILED


class KafkaTriggerActive(_Check):
    ID = "CKV_HWC_IOT_7"
    NAME = "Kafka triggers are enabled by a status action (the provider creates them DISABLED)"
    RESOURCES = ("huaweicloud_fgs_function_trigger_status_action",)
    CATEGORY = CheckCategories.GENERAL_SECURITY

    def scan_resource_conf(self, conf):
        if str(_value(conf, "trigger_type_code", "")).upper() != "KAFKA":
            return CheckResult.PASSED
        active = str(_value(conf, "trigger_status", "")).upper() == "ACTIVE"
        return CheckResult.PASSED if active else CheckResult.FAILED


class ApiHttpsOnly(_Check):
    ID = "CKV_HWC_IOT_8"
    NAME = "APIG APIs accept HTTPS only"
    RESOURCES = ("huaweicloud_apig_api",)
    CATEGORY = CheckCategories.ENCRYPTION

    def scan_resource_conf(self, conf):
        return (
            CheckResult.PASSED
            if str(_value(conf, "request_protocol", "")).upper() == "HTTPS"
            else CheckResult.FAILED
        )


CHECKS = [
    RdsNotPublic(),
    DcsNotPublic(),
    KafkaNotPublic(),
    NoPrivatePortFromInternet(),
    ObsNotPublicWrite(),
    FunctionInVpc(),
    KafkaTriggerActive(),
    ApiHttpsOnly(),
]
