"""Email: queueing transactional messages in the outbox, and delivering the outbox over SMTP.

Sits above `links` (messages carry fresh magic links) and below the domain packages that
send mail (payments, portal, dunning, admin).
"""
