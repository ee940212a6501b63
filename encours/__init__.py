"""Encours: self-service payment portal for accounts-receivable collection."""
