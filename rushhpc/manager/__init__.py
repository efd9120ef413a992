"""The manager side: `Rush`, its plan, supervision (replacing lost workers), reconciliation, adaptation."""
