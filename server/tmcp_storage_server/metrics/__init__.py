"""Prometheus metrics: collectors that read the server's plain counters at scrape time,
the HTTP endpoint, and the supervisor's merge of its workers' metrics."""
