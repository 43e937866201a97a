// Initiates the replica set of compose.yaml once; on later runs it finds it initiated. The
// container restarts on failure until mongo-1 answers, and exits 0 once there is a primary.
const members = ["mongo-1:27017", "mongo-2:27017", "mongo-3:27017"];
try {
  rs.status();
  print("replica set already initiated");
} catch (error) {
  if (error.codeName !== "NotYetInitialized") throw error;
  rs.initiate({_id: "rs0", members: members.map((host, n) => ({_id: n, host: host}))});
  print("replica set initiated: " + members.join(", "));
}
while (!db.hello().primary) {
  sleep(500);
}
print("primary: " + db.hello().primary);
