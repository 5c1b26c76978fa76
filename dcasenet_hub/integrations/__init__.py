"""Integrations with other tools: the HEAR benchmark API (:mod:`.hear`) and matplotlib plots (:mod:`.plot`)."""
