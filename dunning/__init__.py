"""Reminders: scenarios, the daily planner, grouped messages, the email outbox and its SMTP delivery."""
