"""User tools: submit, summary, report, AsyncAPI, sample models, a dev broker."""
