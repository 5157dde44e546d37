// conveyor's MongoDB application user: readWrite on the conveyor database and nothing else
// (no other database, no user or cluster administration). The mongo image runs this once,
// as root, when the data volume is first created (/docker-entrypoint-initdb.d). A volume
// created before this file existed has no such user: create it the same way with mongosh.
const fs = require("fs");
const password = fs.readFileSync("/run/secrets/mongodb_app_password", "utf8").trim();
db.getSiblingDB("conveyor").createUser({
  user: "conveyor",
  pwd: password,
  roles: [{ role: "readWrite", db: "conveyor" }],
});
