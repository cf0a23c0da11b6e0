"""Provider webhooks: Twilio status callbacks, Zadarma notifications, Mango Office events.

Each call carries the owner of the credential its signature was checked with (issue 22,
worker/intake/ownership.py): a registry account's telephony secret makes the call that client's, so the
intake refuses it (403, ``calls_rejected{reason="foreign_number"}``, nothing stored or held) when its
number routes to another client's counter. The environment's secrets and Twilio Webhook Rule keys
are the operator's (owner None), except that a Webhook Rule request whose signed AccountSid a client
registered is that client's.
"""

from __future__ import annotations

from dataclasses import replace
from zoneinfo import ZoneInfo

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ingest.core import IngestCore, SignatureError, error_response, json_response
from ingest.edge import in_networks, parse_address, read_body
from ingest.input import InputError, parse_form
from ingest.providers import mango, twilio, zadarma
from ingest.signatures import mango_valid, twilio_settings, twilio_valid, zadarma_valid
from worker.intake.ownership import tenant
from worker.intake.service import Outcome
from worker.model.inbound import InboundCall


class ProviderRoutes:
    """Each provider's own format and signature, mapped to an ``InboundCall`` and handed to intake."""

    def __init__(self, core: IngestCore) -> None:
        self.core = core
        self.settings = core.settings

    def _secret(self, provider: str, account: str) -> SecretStr | None:
        found = self._credential(provider, account)
        return found[0] if found is not None else None

    def _credential(self, provider: str, account: str) -> tuple[SecretStr, str | None] | None:
        """The provider account's secret and the client account it belongs to (None: the operator's).

        The environment's secrets come first (issue 15) and are the deployment's own; a registry
        account's secret belongs to that account (the ``env`` account's to the deployment).
        """
        configured = {
            "twilio": self.settings.twilio_auth_tokens,
            "zadarma": self.settings.zadarma_secrets,
            "mango": self.settings.mango_accounts,
        }[provider].get(account)
        if configured is not None:
            return configured, None
        registry = self.core.runtime.accounts
        found = registry.telephony(provider, account)
        if found is None or found.secret is None:
            return None
        return found.secret, tenant(registry.telephony_owner(provider, account))

    async def _submit(self, call: InboundCall, owner: str | None) -> Outcome:
        """The intake's outcome for one call brought by ``owner``'s credential. A call for another client's
        number raises ``ForeignCallError`` (403, counted per reason; nothing stored, held or notified), a
        full share of this client's held calls ``HeldAccountFullError`` (503): ``IngestCore.guard``."""
        return (await self.core.submit([replace(call, owner=owner)]))[0]

    # --- Twilio ----------------------------------------------------------------------------------
    async def twilio_voice(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        pairs = parse_form(body)
        form = dict(pairs)
        signature = request.headers.get("x-twilio-signature", "")
        if not signature:
            raise SignatureError(401, "X-Twilio-Signature is missing")
        url = self._public_url(request)
        settings_header = request.headers.get("x-twilio-webhooks-signature-settings", "")
        credential = self._credential("twilio", form.get("AccountSid", ""))
        if settings_header:
            key = self._twilio_rule_key(settings_header)
            if not twilio_valid(key, [url], pairs, signature, settings_header):
                raise SignatureError(403, "X-Twilio-Signature does not match this request under its Webhook Rule key")
            # The rule's key is the operator's; a signed AccountSid a client registered still binds the call.
            owner = credential[1] if credential is not None else None
        else:
            if credential is None or not twilio_valid(credential[0].get_secret_value(), [url], pairs, signature):
                raise SignatureError(403, "X-Twilio-Signature does not match this request for its AccountSid")
            owner = credential[1]
        result = twilio.to_call(form, self.core.configs["twilio"])
        if isinstance(result, InboundCall):
            outcome = await self._submit(result, owner)
            if outcome.status == "rejected":
                return self.core.single_answer(outcome)
        else:
            await self.core.count_ignored("twilio")
        return Response(twilio.EMPTY_TWIML, media_type="text/xml")

    def _twilio_rule_key(self, settings_header: str) -> str:
        """The shared key of the Webhook Rule the settings header names (by name, else ``*``)."""
        name = twilio_settings(settings_header).get("key", "")
        keys = self.settings.twilio_webhook_keys
        secret = keys.get(name) or keys.get("*")
        if secret is None:
            raise SignatureError(
                403,
                "signed under a Twilio Webhook Rule (X-Twilio-Webhooks-Signature-Settings) whose key is not "
                "configured: set CALLTRACK_TWILIO_WEBHOOK_KEYS",
            )
        return secret.get_secret_value()

    def _public_url(self, request: Request) -> str:
        base = self.settings.ingest_public_url
        if base is None:
            return str(request.url)
        query = request.url.query
        return str(base).rstrip("/") + request.url.path + (f"?{query}" if query else "")

    # --- Zadarma ---------------------------------------------------------------------------------
    async def zadarma_echo(self, request: Request) -> Response:
        if self._secret("zadarma", request.path_params["account"]) is None:
            return error_response(404, "no such Zadarma account is configured")
        echo = request.query_params.get("zd_echo")
        if echo is None or len(echo) > 256:
            raise InputError.one("zd_echo", "required", "is required (at most 256 characters)", status=400)
        return PlainTextResponse(echo)

    async def zadarma_event(self, request: Request) -> Response:
        allowed = self.settings.zadarma_allowed_sources
        if allowed and not in_networks(parse_address(self.core.client(request)), allowed):
            raise SignatureError(403, "this address is not in CALLTRACK_ZADARMA_ALLOWED_SOURCES")
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        form = dict(parse_form(body))
        signature = request.headers.get("signature", "")
        if not signature:
            raise SignatureError(401, "the Signature header is missing")
        account = request.path_params["account"]
        credential = self._credential("zadarma", account)
        if credential is None or not zadarma_valid(credential[0].get_secret_value(), form, signature):
            raise SignatureError(403, "Signature does not match this request for this account")
        config = self.core.configs["zadarma"]
        registered = (
            None
            if account in self.settings.zadarma_secrets
            else self.core.runtime.accounts.telephony("zadarma", account)
        )
        if registered is not None and registered.timezone:  # the account's own zone (issue 15)
            config = replace(config, zone=ZoneInfo(registered.timezone))
        result = zadarma.to_call(form, config, account)
        if isinstance(result, str):
            await self.core.count_ignored("zadarma")
            return json_response({"status": "ignored", "reason": result})
        return self.core.single_answer(await self._submit(result, credential[1]))

    # --- Mango Office ----------------------------------------------------------------------------
    async def _mango_form(self, request: Request) -> tuple[dict[str, str], str | None]:
        """The signed form and the owner of the account's credential."""
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        form = dict(parse_form(body))
        if not form.get("sign"):
            raise SignatureError(401, "sign is missing")
        credential = self._credential("mango", request.path_params["account"])
        if credential is None:
            raise SignatureError(403, "sign does not match this request for this account")
        key, _, salt = credential[0].get_secret_value().partition(":")
        if not mango_valid(key, salt, form):
            raise SignatureError(403, "sign does not match this request for this account")
        return form, credential[1]

    async def mango_event(self, request: Request) -> Response:
        form, owner = await self._mango_form(request)
        if request.path_params["kind"] != "summary":
            return json_response({"status": "ignored", "reason": "only events/summary reports a finished call"})
        result = mango.to_call(mango.parse_json(form.get("json", "")), self.core.configs["mango"])
        if isinstance(result, str):
            await self.core.count_ignored("mango")
            return json_response({"status": "ignored", "reason": result})
        return self.core.single_answer(await self._submit(result, owner))

    async def mango_ping(self, request: Request) -> Response:
        if self._secret("mango", request.path_params["account"]) is None:
            return error_response(404, "no such Mango Office account is configured")
        return json_response({"status": "ok"})

    def routes(self) -> list[Route]:
        g = self.core.guard
        return [
            Route("/twilio/voice", g(self.twilio_voice), methods=["POST"]),
            Route("/zadarma/{account}", g(self.zadarma_echo), methods=["GET"]),
            Route("/zadarma/{account}", g(self.zadarma_event), methods=["POST"]),
            Route("/mango/{account}/ping", g(self.mango_ping), methods=["POST", "GET"]),
            Route("/mango/{account}/events/{kind}", g(self.mango_event), methods=["POST"]),
        ]
