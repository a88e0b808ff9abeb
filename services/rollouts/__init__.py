"""The rollout controller: canary steps with analysis and A/B tests with an always-valid test, by policy."""
