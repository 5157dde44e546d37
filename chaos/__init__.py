"""`make chaos`: fault injection with a load generator and a checker that counts lost and
duplicated effects per scenario."""
