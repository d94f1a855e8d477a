# starter_workflow.py
# The product document's quickstart, as printed. Only the indentation is restored (the
# document lost it); the endpoint comes from utils.setup_s3_client.
import json
import os
import boto3
from utils import setup_s3_client

STARTER_WORKFLOW = {
    'title': 'Example 2-step workflow',
    'run': [
        {'cmd': """bash -c 'echo "Do Step 1"'""", 'machine': 'basic', 'no_output': True},
        {'cmd': """bash -c 'echo "Do Step 2"'""", 'machine': 'basic', 'no_output': True},
    ],
}

if __name__ == '__main__':
    s3 = setup_s3_client()
    # Upload the file to S3 and the workflow will start automatically
    s3.put_object(
        Body=json.dumps(STARTER_WORKFLOW).encode('utf-8'),
        Bucket=os.environ.get('LD_S3_BUCKET'),
        Key='in/example',
        Metadata={'ld_run': 'true'},
    )
