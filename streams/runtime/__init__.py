"""The production runtime: the Faust app and the one wall around Faust's private internals
(faust_wall), the stage contract and its driver (driver), the stage agent and event-time
alignment, write-behind state, the versioned messages between stages, the outbox and what
stages publish, the broker's admin side, metrics, outage reporting, policy and the clock."""
