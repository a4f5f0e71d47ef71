"""Fraud detection vertical: card-transaction risk scoring online and in batch (docs/fraud.md)."""
