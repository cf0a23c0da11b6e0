"""The operator console (issue 19): server-rendered pages behind a login, with CSRF-checked actions."""
