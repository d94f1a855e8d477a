# The product document's "Attach Workflows to Your Media and Data Files" example, as printed.
# Only the indentation is restored (the document lost it); the endpoint comes from
# utils.setup_s3_client. It writes an empty example_img.jpg in the working directory.
import json
import os
import boto3
from utils import setup_s3_client

PROCESS_MEDIA = {
    'title': 'Process media files',
    'run': [
        {'cmd': 'process_image', 'machine': 'basic', 'timeout': 30},
    ],
}

if __name__ == '__main__':
    s3 = setup_s3_client()
    filename = 'example_img.jpg'
    example_file = open(filename, 'wb').close()
    with open(filename, 'rb') as media_f:
        # Use the S3 Metadata key "ld_code" to attach the workflow
        s3.put_object(
            Body=media_f,
            Bucket=os.environ.get('LD_S3_BUCKET'),
            Key=f'in/img/{filename}',
            Metadata={'ld_code': json.dumps(PROCESS_MEDIA)},
        )
