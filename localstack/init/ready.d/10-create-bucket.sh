#!/bin/bash
# LocalStack runs this once it is ready (mounted at /etc/localstack/init/ready.d):
# create the bucket tierlog tiers into. Idempotent.
set -euo pipefail
bucket="${TIERLOG_BUCKET_NAME:-tierlog}"
if awslocal s3api head-bucket --bucket "$bucket" 2>/dev/null; then
  echo "bucket $bucket exists"
else
  awslocal s3api create-bucket --bucket "$bucket"
  echo "created bucket $bucket"
fi
