"""URL and address safety: what is refused at creation, and what is refused at send time."""

from __future__ import annotations

import ipaddress

import pytest

from run_lifecycle import CallbackURLRejected, InvalidCallbackConfig, Lifecycle
from run_lifecycle._callbacks_base import Outcome, parse_target
from run_lifecycle._validate import address_problem, callback_url_problem

REFUSED_AT_CREATION = [
    pytest.param("file:///etc/passwd", "only http and https", id="file"),
    pytest.param("ftp://example.com/hook", "only http and https", id="ftp"),
    pytest.param("http:///hook", "must name a host", id="no-host"),
    pytest.param("https://user:secret@example.com/hook", "credentials", id="credentials"),
    pytest.param("http://169.254.169.254/latest/meta-data/", "metadata", id="aws-metadata"),
    pytest.param("http://[fd00:ec2::254]/", "metadata", id="aws-metadata-v6"),
    pytest.param("http://metadata.google.internal/", "metadata", id="gcp-metadata"),
    pytest.param("http://100.100.100.200/", "metadata", id="alibaba-metadata"),
    pytest.param("/relative/hook", "relative", id="relative"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_AT_CREATION)
def test_refused_urls_cannot_be_given_at_creation(url: str, reason: str) -> None:
    """Lifecycle.create refuses the URL with CallbackURLRejected saying why."""
    with pytest.raises(CallbackURLRejected) as info:
        Lifecycle().create(agent_id="agent-1", callback_url=url)
    assert info.value.url == url
    assert reason in info.value.reason


@pytest.mark.parametrize(("url", "reason"), REFUSED_AT_CREATION)
def test_refused_urls_are_refused_again_at_send_time(url: str, reason: str) -> None:
    """A URL that slipped into a store some other way is refused before any connection, no retry."""
    target = parse_target(url)
    assert isinstance(target, Outcome)
    assert target.retryable is False
    assert target.status_code is None
    assert target.error is not None
    assert target.error.startswith("refused: ")
    assert reason in target.error


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "https://example.com/hook", "http://[::1]/x"]
)
def test_plain_http_and_https_urls_are_accepted(url: str) -> None:
    """http(s) URLs with a host and no credentials pass the URL check."""
    assert callback_url_problem(url) is None
    assert Lifecycle().create(agent_id="a", callback_url=url).callback_url == url


def test_target_keeps_the_idna_host_for_tls_and_resolution() -> None:
    """An internationalised host is resolved and verified under its ASCII (IDNA) form."""
    target = parse_target("https://bücher.example/hook")
    assert not isinstance(target, Outcome)
    assert target.host == "xn--bcher-kva.example"
    assert target.port == 443
    assert target.literal is None


ALWAYS_REFUSED = ["169.254.169.254", "169.254.1.1", "fe80::1", "::ffff:169.254.169.254"]
PRIVATE = [
    "127.0.0.1",
    "127.8.8.8",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "0.0.0.0",
    "::",
    "fc00::1",
    "224.0.0.1",
    "240.0.0.1",
    "::ffff:127.0.0.1",
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"]


@pytest.mark.parametrize("address", ALWAYS_REFUSED)
@pytest.mark.parametrize("block", [False, True])
def test_metadata_and_link_local_addresses_are_always_refused(address: str, block: bool) -> None:
    """Cloud metadata and link-local addresses are refused whatever the private-network option."""
    problem = address_problem(ipaddress.ip_address(address), block_private_networks=block)
    assert problem is not None
    assert "metadata" in problem


@pytest.mark.parametrize("address", PRIVATE)
def test_private_addresses_are_allowed_by_default_and_refused_when_blocked(address: str) -> None:
    """Loopback and private networks work for local development and are refused when blocked."""
    ip = ipaddress.ip_address(address)
    assert address_problem(ip, block_private_networks=False) is None
    problem = address_problem(ip, block_private_networks=True)
    assert problem is not None
    assert "private networks are blocked" in problem


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed_even_when_private_networks_are_blocked(
    address: str,
) -> None:
    """Globally routable addresses pass with the option on."""
    assert address_problem(ipaddress.ip_address(address), block_private_networks=True) is None


def test_a_non_base64_secret_is_refused() -> None:
    """A str secret must be Standard Webhooks base64; anything else is refused, not reinterpreted."""
    from run_lifecycle._callbacks_base import make_signer

    with pytest.raises(InvalidCallbackConfig) as info:
        make_signer("not base64 at all!")
    assert info.value.option == "secret"
    with pytest.raises(InvalidCallbackConfig):
        make_signer(b"short")
    assert make_signer("whsec_" + "A" * 32) is not None
    assert make_signer(b"k" * 32) is not None
    assert make_signer(None) is None
