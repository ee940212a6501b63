"""The kernel: what every Encours package needs and that imports no domain package.

Settings, the clock, i18n, the database and its unit of work, templating, sessions,
security middleware and the user-facing error pages. Nothing here may import `ledger`,
`links`, `portal`, `payments`, `reconciliation`, `dunning`, `api`, `admin` or `encours`
(an import-linter contract in `make test` checks it).
"""
