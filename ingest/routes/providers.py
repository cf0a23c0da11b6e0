"""Provider webhooks: Twilio status callbacks, Zadarma notifications, Mango Office events."""

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
from worker.model.inbound import InboundCall


class ProviderRoutes:
    """Each provider's own format and signature, mapped to an ``InboundCall`` and handed to intake."""

    def __init__(self, core: IngestCore) -> None:
        self.core = core
        self.settings = core.settings

    def _secret(self, provider: str, account: str) -> SecretStr | None:
        """The provider account's secret: the environment's, else the account registry's (issue 15)."""
        configured = {
            "twilio": self.settings.twilio_auth_tokens,
            "zadarma": self.settings.zadarma_secrets,
            "mango": self.settings.mango_accounts,
        }[provider].get(account)
        if configured is not None:
            return configured
        found = self.core.runtime.accounts.telephony(provider, account)
        return found.secret if found is not None else None

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
        if settings_header:
            key = self._twilio_rule_key(settings_header)
            if not twilio_valid(key, [url], pairs, signature, settings_header):
                raise SignatureError(403, "X-Twilio-Signature does not match this request under its Webhook Rule key")
        else:
            token = self._secret("twilio", form.get("AccountSid", ""))
            if token is None or not twilio_valid(token.get_secret_value(), [url], pairs, signature):
                raise SignatureError(403, "X-Twilio-Signature does not match this request for its AccountSid")
        result = twilio.to_call(form, self.core.configs["twilio"])
        if isinstance(result, InboundCall):
            outcome = (await self.core.submit([result]))[0]
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
        secret = self._secret("zadarma", account)
        if secret is None or not zadarma_valid(secret.get_secret_value(), form, signature):
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
        return self.core.single_answer((await self.core.submit([result]))[0])

    # --- Mango Office ----------------------------------------------------------------------------
    async def _mango_form(self, request: Request) -> dict[str, str]:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        form = dict(parse_form(body))
        if not form.get("sign"):
            raise SignatureError(401, "sign is missing")
        secret = self._secret("mango", request.path_params["account"])
        if secret is None:
            raise SignatureError(403, "sign does not match this request for this account")
        key, _, salt = secret.get_secret_value().partition(":")
        if not mango_valid(key, salt, form):
            raise SignatureError(403, "sign does not match this request for this account")
        return form

    async def mango_event(self, request: Request) -> Response:
        form = await self._mango_form(request)
        if request.path_params["kind"] != "summary":
            return json_response({"status": "ignored", "reason": "only events/summary reports a finished call"})
        result = mango.to_call(mango.parse_json(form.get("json", "")), self.core.configs["mango"])
        if isinstance(result, str):
            await self.core.count_ignored("mango")
            return json_response({"status": "ignored", "reason": result})
        return self.core.single_answer((await self.core.submit([result]))[0])

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
