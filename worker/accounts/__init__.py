"""The account registry: clients with their Yandex logins, OAuth tokens, counters and telephony accounts."""
