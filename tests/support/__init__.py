"""Helpers that tests share: real code-server processes and Debian's Chromium under Playwright."""
