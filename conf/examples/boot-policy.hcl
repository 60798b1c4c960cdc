# Measured-boot policies for NodeAttestor "tpm" (measured_boot { policy_file = … }).
# Digests and certificate fingerprints are lowercase hex SHA-256 (the log's
# sha256 bank). `plinth-server tpm policy learn -agent <id>` writes one from a
# node's attested boot; `tpm policy test -policy <file>` dry-runs it.

# Every node must pass this one (measured_boot { policy = "prod" }).
policy "prod" {
  secure_boot = true

  # Microsoft's UEFI CA 2011 and Windows PCA 2011 only in db.
  db_allowed = [
    "48e99b991f57fc52f76149599bff0a58c47154229b9f8d603ac40d3500248507",
    "e8e95f0733a55e8bad7be0a1413ee23c51fcea64b3c8fa6a786935fddcc71961",
  ]

  # shim and GRUB (Authenticode digests, PCR 4): the boot path every node takes.
  boot_apps = [
    "6265b732b005b3f330bcd1843374e5ec6ec5aef27cdb97a23daeb8580abbf526",
    "b0a836fec2faf4a9bea0e1a5f1945bc86ddc03ac98ce0ae172ed9b1e536d7595",
  ]

  # The fleet as it boots today, and the kernel being rolled out.
  reference "kernel-5.11" {
    firmware        = ["GCE Virtual Firmware v1"]
    kernel_cmdlines = ["/boot/vmlinuz-5.11.0-1006-gcp root=PARTUUID=6443a6ae-e5e9-4df7-9a06-d1329e50f33c ro console=ttyS0 panic=-1"]
  }
  reference "kernel-6.1" {
    firmware        = ["GCE Virtual Firmware v1"]
    kernel_cmdlines = ["/boot/vmlinuz-6.1.0-13-cloud-amd64 root=PARTUUID=6443a6ae-e5e9-4df7-9a06-d1329e50f33c ro console=ttyS0 panic=-1"]
  }
}

# Adds the selector tpm:policy:debug-allowed to nodes that pass it.
policy "debug-allowed" {
  secure_boot = false
}
