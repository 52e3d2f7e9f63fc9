"""PagerDuty Events API v2 (the enqueue body), so PagerDuty-speaking tools can send here."""
