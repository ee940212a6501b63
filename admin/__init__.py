"""Back-office for staff: login, dashboard and the pages that run collection."""
