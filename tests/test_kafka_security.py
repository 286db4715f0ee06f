"""Kafka over SASL_SSL, offline: the settings, every Kafka client's arguments, the TLS checks, the
packed CA certificate, and the Terraform that turns it on (parsed with python-hcl2).

The embedded broker (tansu) speaks no SASL, so nothing here signs in to a real broker: the clients
are recorded instead of connected, and the TLS context is tried against a local TLS server. The
real-broker tests (test_producer.py, test_group_commit.py) cover the PLAINTEXT path end to end.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

import common
from common import producer as producer_module
from common.errors import ServiceUnavailable
from common.producer import UNAVAILABLE, ReadingProducer, broker_tls_context, client_security
from common.readings import Reading
from common.settings import KAFKA_SASL_MECHANISMS, Settings, SettingsError
from deploy import package
from functions import load_function
from local import topics, trigger_loop

from .hcl_eval import Hcl
from .terraform_config import TERRAFORM_DIR, first, load

# Test-only certificates (EC P-256, valid until 2126), made with openssl for these tests and nothing
# else: a CA, a broker certificate it signed for the name broker.dms.invalid, and a self-signed
# impostor with the same name.
TEST_CA = """-----BEGIN CERTIFICATE-----
MIIBojCCAUmgAwIBAgIUfTf9BncHysGADDVNyhgNJb26UZkwCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTaW90LW1ldHJpY3MgdGVzdCBDQTAgFw0yNjExMzAxMDQ1NTha
GA8yMTI2MTEwNjEwNDU1OFowHjEcMBoGA1UEAwwTaW90LW1ldHJpY3MgdGVzdCBD
QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNclikAcCq7qbUjF0zC9IdIe6ziU
inU1HLzBlYj4eCphEHNfaUjkyvRgM71MOaie1k46N4CthOqMDp/dBHtwMvujYzBh
MB0GA1UdDgQWBBQ+vQchu6tb9Tdgg8nmjAO5zEB5ezAfBgNVHSMEGDAWgBQ+vQch
u6tb9Tdgg8nmjAO5zEB5ezAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIB
BjAKBggqhkjOPQQDAgNHADBEAiAQl657RjbDTqntCyVZ94jOCHp9f7scRdProQmk
vur6rAIgIF1VQcz6YazUdbJVnDrrxdUrRPu2DtCjt+NDMmYXGpg=
-----END CERTIFICATE-----
"""
BROKER_CERT = """-----BEGIN CERTIFICATE-----
MIIBwjCCAWegAwIBAgIUCtmOG0Aw2bEOP68ECt2Knd956FcwCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTaW90LW1ldHJpY3MgdGVzdCBDQTAgFw0yNjExMzAxMDQ1NTha
GA8yMTI2MTEwNjEwNDU1OFowHTEbMBkGA1UEAwwSYnJva2VyLmRtcy5pbnZhbGlk
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEJFL5T5LDau9moqvU8kJ3IAhdyNUx
fg6kXUW9Yh5pPtVykvTvIA9KUIzuQYnhntomxOhaZc3QOShzpgGQkCK2v6OBgTB/
MB0GA1UdEQQWMBSCEmJyb2tlci5kbXMuaW52YWxpZDAJBgNVHRMEAjAAMBMGA1Ud
JQQMMAoGCCsGAQUFBwMBMB0GA1UdDgQWBBRw93hKFQFvGD+bl5vvu3/Ad41GGzAf
BgNVHSMEGDAWgBQ+vQchu6tb9Tdgg8nmjAO5zEB5ezAKBggqhkjOPQQDAgNJADBG
AiEA6Yn3pbJca4d5CBcetQx6O9BTys9cpGcMET5QwnUk7OoCIQDPsWT33jacIG9D
hbRDyeU+4knLdwcGX5ycV62JRb2NUw==
-----END CERTIFICATE-----
"""
BROKER_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+poWK8n9pd8hjo3E
kVqH/V+VCMweK+xJvZJv2G+TvaKhRANCAAQkUvlPksNq72aiq9TyQncgCF3I1TF+
DqRdRb1iHmk+1XKS9O8gD0pQjO5BieGe2ibE6FplzdA5KHOmAZCQIra/
-----END PRIVATE KEY-----
"""
IMPOSTOR_CERT = """-----BEGIN CERTIFICATE-----
MIIBsTCCAVagAwIBAgIUJ16B2sGfZWM6j3p+hYO639UdSXEwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSYnJva2VyLmRtcy5pbnZhbGlkMCAXDTI2MTEzMDEwNDU1OFoY
DzIxMjYxMTA2MTA0NTU4WjAdMRswGQYDVQQDDBJicm9rZXIuZG1zLmludmFsaWQw
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASYPJ7ljCpHTLswxgk078PvLNHsbpGd
hQBeTqhhuPYWomg4k8vcKz8lEwTquzwBtwew7R1X2eKjW078cSRsQLsKo3IwcDAd
BgNVHQ4EFgQUeVeIWu58/Vx5Fns3DZbGHvvINSgwHwYDVR0jBBgwFoAUeVeIWu58
/Vx5Fns3DZbGHvvINSgwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHREEFjAUghJicm9r
ZXIuZG1zLmludmFsaWQwCgYIKoZIzj0EAwIDSQAwRgIhAOsbDLNhAEhrg/DxC+Ja
r4iJenm3mHQKGFd3IMtPeL3GAiEAumfzZUlz3VHdg/QmQzbaqi7FopML7b56/eE1
iSNA1WA=
-----END CERTIFICATE-----
"""
IMPOSTOR_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZQPinbkT/8zljIbM
yCtJIYaXDiGcRyKuJz6Dz4d9/42hRANCAASYPJ7ljCpHTLswxgk078PvLNHsbpGd
hQBeTqhhuPYWomg4k8vcKz8lEwTquzwBtwew7R1X2eKjW078cSRsQLsK
-----END PRIVATE KEY-----
"""

PASSWORD = "Sasl-pass-123"
SECURITY_KEYS = re.compile(r"^(security_protocol|sasl_|ssl_)")


@pytest.fixture
def ca_file(tmp_path) -> Path:
    path = tmp_path / "kafka-ca.pem"
    path.write_text(TEST_CA)
    return path


def sasl_ssl(cafile: Path | str, **overrides: str) -> Settings:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "10.20.2.11:9093,10.20.2.12:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "iot-app",
        "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CAFILE": str(cafile),
        **overrides,
    }
    return Settings.from_env(env)


class Recorder:
    """Stands in for a kafka-python client class: records the arguments of each instance."""

    def __init__(self, topics: set[str] = frozenset()):
        self.calls: list[dict] = []
        self.topics = set(topics)

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self

    def list_topics(self):
        return self.topics

    def subscribe(self, *args, **kwargs):
        pass

    def create_topics(self, new_topics, raise_errors=False):
        return {"topics": [{"name": name, "error_code": 0} for name in new_topics]}

    def wait_for_topics(self, names):
        pass

    def close(self, *args, **kwargs):
        pass


@pytest.fixture
def clients(monkeypatch) -> dict[str, Recorder]:
    """The producer, admin and consumer classes the service uses, replaced by recorders."""
    recorders = {"producer": Recorder(), "admin": Recorder({"device-metrics"}), "consumer": Recorder()}
    monkeypatch.setattr(producer_module, "KafkaProducer", recorders["producer"])
    monkeypatch.setattr(producer_module, "KafkaAdminClient", recorders["admin"])
    monkeypatch.setattr(trigger_loop, "KafkaConsumer", recorders["consumer"])
    monkeypatch.setattr(topics, "KafkaAdminClient", recorders["admin"])
    return recorders


# ---------------------------------------------------------------- settings: refused when read, before any client


def test_plaintext_is_the_default_and_gives_the_clients_no_security_arguments():
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert client_security(settings) == {}


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        ({"KAFKA_SASL_USERNAME": ""}, "KAFKA_SASL_USERNAME"),
        ({"KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SSL_CAFILE": ""}, "KAFKA_SSL_CAFILE"),
        (
            {"KAFKA_SASL_USERNAME": "", "KAFKA_SASL_PASSWORD": "", "KAFKA_SSL_CAFILE": ""},
            "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_CAFILE",
        ),
    ],
)
def test_sasl_ssl_without_a_user_password_or_ca_file_is_refused_naming_what_is_missing(ca_file, unset, named):
    with pytest.raises(SettingsError, match=f"^KAFKA_SECURITY_PROTOCOL=SASL_SSL needs {named}$"):
        sasl_ssl(ca_file, **unset)


def test_the_function_initializer_refuses_incomplete_sasl_ssl_user_data():
    """In FunctionGraph the settings are read in the initializer: the instance fails to start, with
    the reason in its log, instead of every request failing at the broker."""

    class Context:
        user_data = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "iot-app"}

        def getUserData(self, key):  # noqa: N802 (FunctionGraph's name)
            return self.user_data.get(key)

    with pytest.raises(SettingsError, match="needs KAFKA_SASL_PASSWORD, KAFKA_SSL_CAFILE"):
        load_function("ingest").initializer(Context())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL"},
            "KAFKA_SECURITY_PROTOCOL must be PLAINTEXT or SASL_SSL, not 'SSL'",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl"}, "not 'sasl_ssl'"),
        ({"KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}, "KAFKA_SASL_MECHANISM must be PLAIN or SCRAM-SHA-512"),
        (
            {"KAFKA_SASL_PASSWORD": PASSWORD},
            "KAFKA_SASL_PASSWORD set, but KAFKA_SECURITY_PROTOCOL is PLAINTEXT",
        ),
        ({"KAFKA_SSL_CAFILE": "ca.pem"}, "KAFKA_SSL_CAFILE set, but KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
    ],
)
def test_kafka_security_settings_that_do_not_fit_together_are_refused(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_the_sasl_password_is_never_shown(ca_file):
    settings = sasl_ssl(ca_file)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    with pytest.raises(SettingsError) as refused:
        sasl_ssl(ca_file, KAFKA_SASL_USERNAME="")
    assert PASSWORD not in str(refused.value)


# ---------------------------------------------------------------- what each client is given


def test_plaintext_clients_get_no_sasl_or_ssl_arguments_at_all(clients):
    producer = ReadingProducer(Settings())
    producer._client()
    producer.ping()
    trigger_loop.TriggerLoop(Settings(), handler=lambda event, context: None)._consumer()
    for name in ("producer", "admin", "consumer"):
        (kwargs,) = clients[name].calls
        assert not [key for key in kwargs if SECURITY_KEYS.match(key)], name
        assert kwargs["bootstrap_servers"] == ["127.0.0.1:9092"]


def test_sasl_ssl_clients_get_the_mechanism_user_password_and_a_context_that_trusts_only_the_ca(
    clients, ca_file
):
    settings = sasl_ssl(ca_file)
    producer = ReadingProducer(settings)
    producer._client()
    producer.ping()
    trigger_loop.TriggerLoop(settings, handler=lambda event, context: None)._consumer()
    expected = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "iot-app",
        "sasl_plain_password": PASSWORD,
    }
    for name in ("producer", "admin", "consumer"):
        (kwargs,) = clients[name].calls
        given = {key: value for key, value in kwargs.items() if SECURITY_KEYS.match(key)}
        # The context decides everything about TLS: no ssl_cafile or ssl_check_hostname beside it.
        assert set(given) == {*expected, "ssl_context"}, name
        assert {key: given[key] for key in expected} == expected, name
        assert kwargs["bootstrap_servers"] == ["10.20.2.11:9093", "10.20.2.12:9093"]
        context = given["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED, "the broker's chain is always verified"
        assert context.check_hostname is False, "DMS: certificate name checking off"
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
        # The CA file and nothing else: not the machine's public roots.
        assert [dict(pair[0] for pair in ca["subject"]) for ca in context.get_ca_certs()] == [
            {"commonName": "iot-metrics test CA"}
        ]
    # The producer and its readiness check read the CA file once between them.
    assert clients["producer"].calls[0]["ssl_context"] is clients["admin"].calls[0]["ssl_context"]


def test_the_local_topic_creation_passes_the_same_security(clients, ca_file):
    security = client_security(sasl_ssl(ca_file))
    topics.create_topics("10.20.2.11:9093", ["device-metrics"], security=security)
    (kwargs,) = clients["admin"].calls
    assert {key: kwargs[key] for key in security} == security


def test_a_relative_ca_file_is_read_from_the_directory_that_holds_common(monkeypatch, tmp_path):
    assert producer_module.PACKAGE_ROOT == Path(common.__file__).resolve().parent.parent
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "kafka-ca.pem").write_text(TEST_CA)
    monkeypatch.setattr(producer_module, "PACKAGE_ROOT", tmp_path)
    context = client_security(sasl_ssl("certs/kafka-ca.pem"))["ssl_context"]
    assert len(context.get_ca_certs()) == 1


def test_a_missing_or_bad_ca_file_is_a_clear_503_and_no_client_is_built(clients, tmp_path):
    bad = tmp_path / "not-a-certificate.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for cafile, reason in ((tmp_path / "absent.pem", "there is no file"), (bad, "holds no usable CA")):
        producer = ReadingProducer(sasl_ssl(cafile))
        with pytest.raises(ServiceUnavailable) as refused:
            producer.send([Reading("sensor-1", "temperature", 21.5, datetime.now(timezone.utc))])
        assert refused.value.message == UNAVAILABLE  # the device is told to retry, nothing more
        assert isinstance(refused.value.__cause__, SettingsError)
        with pytest.raises(ServiceUnavailable, match=f"KAFKA_SSL_CAFILE .*{reason}"):
            producer.ping()  # /ready tells the operator which file and why
    assert clients["producer"].calls == [] and clients["admin"].calls == []


# ---------------------------------------------------------------- the TLS context against a real TLS server


def tls_handshake(context: ssl.SSLContext, tmp_path: Path, cert: str, key: str) -> None:
    """Connect to a local TLS server presenting ``cert`` by IP (as to a DMS broker), and handshake."""
    (tmp_path / "server.pem").write_text(cert)
    (tmp_path / "server.key").write_text(key)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            connection, _ = listener.accept()
            try:
                with server_context.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass  # the client refused the certificate

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"x")
        finally:
            server.join(timeout=5)


def test_a_broker_certified_by_the_ca_is_accepted_whatever_name_it_carries(tmp_path, ca_file):
    # The certificate names broker.dms.invalid; the client connects to 127.0.0.1.
    tls_handshake(broker_tls_context(str(ca_file)), tmp_path, BROKER_CERT, BROKER_KEY)


def test_a_broker_certificate_from_another_ca_is_refused(tmp_path, ca_file):
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        tls_handshake(broker_tls_context(str(ca_file)), tmp_path, IMPOSTOR_CERT, IMPOSTOR_KEY)


# ---------------------------------------------------------------- the CA certificate travels in the dependency zip


def test_make_package_packs_the_ca_where_terraform_points_kafka_ssl_cafile(monkeypatch, tmp_path, ca_file):
    monkeypatch.setattr(package, "fetch_wheels", lambda *args, **kwargs: [])
    manifest = package.build(
        dist=tmp_path / "dist", functions=["ingest"], log=lambda *a: None, kafka_ca=ca_file
    )
    deps = tmp_path / "dist" / manifest["dependency"]["file"]
    with zipfile.ZipFile(deps) as archive:
        assert archive.read(package.KAFKA_CA_ARCNAME).decode() == TEST_CA
        archive.extractall(tmp_path / "unpacked")
    assert manifest["dependency"]["kafka_ca"]["file"] == package.KAFKA_CA_ARCNAME
    # Unpacked as FunctionGraph unpacks a dependency, the path Terraform sets finds the certificate.
    tf = load(TERRAFORM_DIR)
    on = evaluator(tf, kafka_sasl_ssl=True)
    cafile = on.eval(tf.locals["kafka_settings"]["KAFKA_SSL_CAFILE"])
    assert cafile == package.KAFKA_CA_ARCNAME
    monkeypatch.setattr(producer_module, "PACKAGE_ROOT", tmp_path / "unpacked")
    assert len(broker_tls_context(cafile).get_ca_certs()) == 1


def test_without_a_ca_file_the_package_is_as_before(monkeypatch, tmp_path):
    monkeypatch.setattr(package, "fetch_wheels", lambda *args, **kwargs: [])
    manifest = package.build(
        dist=tmp_path, functions=["ingest"], log=lambda *a: None, kafka_ca=tmp_path / "absent.pem"
    )
    assert "kafka_ca" not in manifest["dependency"]
    with zipfile.ZipFile(tmp_path / manifest["dependency"]["file"]) as archive:
        assert not [name for name in archive.namelist() if name.startswith("certs/")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (TEST_CA + BROKER_KEY, "holds a private key"),
        ("just some text\n", "is not a PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "is not a usable CA certificate"),
    ],
)
def test_make_package_refuses_anything_but_a_ca_certificate(tmp_path, content, message):
    source = tmp_path / "kafka-ca.pem"
    source.write_text(content)
    with pytest.raises(package.PackageError, match=message):
        package.kafka_ca_entries(source)


# ---------------------------------------------------------------- Terraform with kafka_sasl_ssl on and off


def evaluator(tf, **variables) -> Hcl:
    """kafka.tf and network.tf evaluated for these variable values; everything else stays a ``Ref``
    (a variable's value, a resource attribute), named as in the files."""
    return Hcl({"var": variables}, tf.locals, symbolic=True)


@pytest.fixture(scope="module")
def tf():
    return load(TERRAFORM_DIR)


@pytest.fixture(scope="module")
def on(tf) -> Hcl:
    return evaluator(tf, kafka_sasl_ssl=True)


@pytest.fixture(scope="module")
def off(tf) -> Hcl:
    return evaluator(tf, kafka_sasl_ssl=False)


def test_with_sasl_ssl_on_the_dms_instance_is_created_for_sasl_ssl_with_the_functions_user(tf, on):
    kafka = on.eval(tf.resource("huaweicloud_dms_kafka_instance", "kafka"))
    assert kafka["ssl_enable"] is True
    assert kafka["security_protocol"] == "SASL_SSL"
    assert kafka["access_user"] == "var.kafka_sasl_username"
    assert kafka["password"] == "var.kafka_sasl_password"
    # Every mechanism the functions may be set to is enabled, and PLAIN for the trigger (which
    # cannot be told one): the instance's mechanisms cannot change once SASL is on.
    mechanisms = tf.variables["kafka_sasl_mechanism"]["validation"][0]["condition"]
    allowed = set(re.findall(r'"([A-Z0-9-]+)"', mechanisms))
    assert allowed == set(KAFKA_SASL_MECHANISMS)
    assert set(kafka["enabled_mechanisms"]) == allowed | {"PLAIN"}
    assert tf.variables["kafka_sasl_mechanism"]["default"] in allowed
    # Refused at plan when the password is missing.
    (precondition,) = first(kafka["lifecycle"])["precondition"]
    assert "var.kafka_sasl_password" in precondition["condition"]
    assert "kafka_sasl_password" in precondition["error_message"]


def test_with_sasl_ssl_off_the_dms_instance_is_what_it_always_was(tf, off):
    kafka = off.eval(tf.resource("huaweicloud_dms_kafka_instance", "kafka"))
    assert kafka["ssl_enable"] is False
    for argument in ("security_protocol", "enabled_mechanisms", "access_user", "password"):
        assert kafka[argument] is None, argument  # unset: no change to an existing instance
    assert "port_protocol" not in kafka and "vpc_client_plain" not in kafka


def test_the_switch_is_off_by_default_and_says_it_replaces_the_instance(tf):
    switch = tf.variables["kafka_sasl_ssl"]
    assert switch["type"] == "bool" and switch["default"] is False
    # ssl_enable and security_protocol force a new instance in the provider: the warning is in the
    # description, where `terraform plan` users and the README's table find it.
    assert re.search(r"existing stack replaces the Kafka instance", switch["description"])


def test_the_trigger_signs_in_with_the_same_user_over_ssl(tf, on, off):
    assert on.eval(tf.locals["kafka_trigger_auth"]) == {
        "kafka_ssl_enable": True,
        "kafka_user": "var.kafka_sasl_username",
        "kafka_password": "var.kafka_sasl_password",
    }
    assert off.eval(tf.locals["kafka_trigger_auth"]) == {"kafka_ssl_enable": False}
    assert "local.kafka_trigger_auth" in tf.locals["kafka_trigger_event"]


def test_the_security_group_opens_only_the_sasl_ssl_port_to_the_app_subnet(tf, on, off):
    for hcl, port in ((on, 9093), (off, 9092)):
        ingress = [
            hcl.eval(rule)
            for rule in tf.of_type("huaweicloud_networking_secgroup_rule").values()
            if "secgroup.kafka" in rule["security_group_id"] and rule["direction"] == "ingress"
        ]
        from_apps = [rule for rule in ingress if rule.get("remote_ip_prefix") == "local.app_cidr"]
        assert [(r["protocol"], r["port_range_min"], r["port_range_max"]) for r in from_apps] == [
            ("tcp", port, port)
        ]
        others = [rule for rule in ingress if rule not in from_apps]
        assert all(rule.get("remote_group_id") for rule in others), "only brokers among themselves"
    # The functions' bootstrap list uses the same port.
    assert "local.ports.kafka" in tf.locals["kafka_bootstrap_servers"]
    assert "connect_address" in tf.locals["kafka_bootstrap_servers"]


def test_the_functions_settings_carry_sasl_ssl_and_the_code_accepts_them(tf, on, off, ca_file):
    plain, secret = on.eval(tf.locals["kafka_settings"]), on.eval(tf.locals["kafka_secret_settings"])
    assert plain["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert plain["KAFKA_SASL_MECHANISM"] == "var.kafka_sasl_mechanism"
    assert plain["KAFKA_SASL_USERNAME"] == "var.kafka_sasl_username"
    assert plain["KAFKA_SSL_CAFILE"] == package.KAFKA_CA_ARCNAME == tf.locals["kafka_ca_file"]
    assert secret == {"KAFKA_SASL_PASSWORD": "var.kafka_sasl_password"}
    # With the variables' values in place, the settings pass the code's own checks.
    values = {
        "var.kafka_sasl_mechanism": tf.variables["kafka_sasl_mechanism"]["default"],
        "var.kafka_sasl_username": tf.variables["kafka_sasl_username"]["default"],
        "var.kafka_sasl_password": PASSWORD,
    }
    env = {name: values.get(value, value) for name, value in {**plain, **secret}.items()}
    env["KAFKA_SSL_CAFILE"] = str(ca_file)  # where the package would put it
    settings = Settings.from_env(env)
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert client_security(settings)["sasl_mechanism"] == "SCRAM-SHA-512"
    # Off, every name is still given (main.tf looks each one up), empty but the protocol.
    plain, secret = off.eval(tf.locals["kafka_settings"]), off.eval(tf.locals["kafka_secret_settings"])
    assert {name: value for name, value in plain.items() if name != "KAFKA_BOOTSTRAP_SERVERS"} == {
        "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "",
        "KAFKA_SASL_USERNAME": "",
        "KAFKA_SSL_CAFILE": "",
    }
    assert secret == {"KAFKA_SASL_PASSWORD": ""}
    assert client_security(Settings.from_env({**plain, **secret})) == {}


def test_the_sasl_variables_are_validated_as_dms_requires(tf):
    password = tf.variables["kafka_sasl_password"]
    assert password["sensitive"] is True and "default" not in password
    condition = password["validation"][0]["condition"]
    assert 'var.kafka_sasl_password == ""' in condition, "empty is allowed while SASL_SSL is off"
    assert ">= 8" in condition and "<= 32" in condition
    username = tf.variables["kafka_sasl_username"]
    pattern = re.search(r'regex\("(.+?)", var', username["validation"][0]["condition"]).group(1)
    assert re.fullmatch(pattern, username["default"])
    assert not re.fullmatch(pattern, "ab") and not re.fullmatch(pattern, "user_name")


def test_plan_warns_when_the_package_lacks_the_ca_certificate(tf):
    (check,) = [block["kafka_ca_certificate_packaged"] for block in tf.files["kafka.tf"]["check"]]
    condition = first(check["assert"])["condition"]
    # It reads the manifest entry `make package` writes for the packed certificate.
    assert "manifest.json" in condition and ".dependency.kafka_ca.file == local.kafka_ca_file" in condition
    assert "deploy/kafka-ca.pem" in first(check["assert"])["error_message"]
    assert package.KAFKA_CA_SOURCE == Path(package.__file__).resolve().parent / "kafka-ca.pem"
